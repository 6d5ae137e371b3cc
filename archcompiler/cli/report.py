"""archc report SPEC -o report.html : one self-contained page with everything archc knows."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    from .flops import positive

    p = command(sub, "report", help="one offline HTML page: diagram, table, cost charts, memory, latency",
                description="Write a self-contained HTML page (no network requests) with the diagram (click a "
                "module to see its layers), the regenerated table with the paper's inconsistent cells marked, "
                "MACs and parameters per row and per stage, the share of each op kind, the roofline, memory per "
                "row for inference and training, predicted latency (from archc calibrate's machine profile) and, "
                "with --profile, measured latency, and the resolved spec with origins.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("-o", "--output", metavar="FILE", help="the page (default: SPEC_NAME-report.html here)")
    p.add_argument("--batch", type=positive, default=1, metavar="N", help="images per batch (default 1)")
    p.add_argument("--machine", metavar="FILE", help="machine profile (default: the one archc calibrate saved)")
    p.add_argument("--profile", action="store_true", help="also measure the latency of every row (imports torch)")
    p.add_argument("--force", action="store_true", help="replace the default output file even if archc did not write it")
    add_set(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..api import report
    from ..io import check_default_output, refuse_inputs
    from ..spec import load_spec

    spec = load_spec(args.spec, args.set)
    out = Path(args.output or f"{spec.name}-report.html")
    refuse_inputs(out, [args.spec])
    if not args.output:
        check_default_output(out, args.force)
    if args.profile:
        print("measuring every row (importing torch)...", file=sys.stderr)
    report(spec, out, batch=args.batch, machine=args.machine, profile=args.profile)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
