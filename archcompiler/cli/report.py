"""archc report SPEC -o report.html : one self-contained page with everything archc knows."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_features, add_set, command
    from .flops import positive

    p = command(sub, "report", help="one offline HTML page: diagram, table, cost charts, memory, latency",
                description="Write a self-contained HTML page (no network requests) with the diagram (click a "
                "module to see its layers), the regenerated table with the paper's inconsistent cells marked, "
                "MACs and parameters per row and per stage, the share of each op kind, the roofline, memory per "
                "row for inference and training, predicted latency (from archc calibrate's machine profile) and, "
                "with --profile, measured latency, and the resolved spec with origins.")
    p.add_argument("spec", metavar="SPEC", nargs="?",
                   help="the spec file (YAML), or a sweep's sweep.json (archc sweep -o DIR)")
    p.add_argument("--sweep", metavar="DIR", help="instead of a spec: the page of a sweep (archc sweep -o DIR): "
                   "its table and Pareto plot")
    p.add_argument("-o", "--output", metavar="FILE", help="the page (default: SPEC_NAME-report.html here)")
    p.add_argument("--batch", type=positive, default=1, metavar="N", help="images per batch (default 1)")
    p.add_argument("--machine", metavar="FILE", help="machine profile (default: the one archc calibrate saved)")
    p.add_argument("--profile", action="store_true", help="also measure the latency of every row (imports torch)")
    p.add_argument("--force", action="store_true", help="replace the default output file even if archc did not write it")
    p.add_argument("--pretrained", action="store_true",
                   help="the network as the builder's published weights run it: their input size and preprocessing "
                        "(nothing is downloaded)")
    p.add_argument("--weights", metavar="NAME", help="as --pretrained, for the published weights of that name "
                   "(IMAGENET1K_V1, DEFAULT)")
    add_set(p)
    add_features(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import report, sweep_report
    from ..errors import SpecError, error

    if args.sweep or (args.spec and args.spec.endswith(".json")):
        if args.sweep and args.spec:
            raise SpecError([error("give a SPEC or --sweep DIR, not both", "--sweep")])
        out = sweep_report(args.sweep or args.spec, args.output, force=args.force)
    else:
        if not args.spec:
            raise SpecError([error("archc report needs a SPEC (or --sweep DIR)", "SPEC",
                                   hint="e.g. archc report specs/googlenet.yaml")])
        if args.profile:
            print("measuring every row (importing torch)...", file=sys.stderr)
        out = report(args.spec, args.output, args.set, batch=args.batch, machine=args.machine, profile=args.profile,
                     weights=_weights(args), force=args.force)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def _weights(args: argparse.Namespace) -> str | bool | None:
    """--pretrained (True) or --weights NAME; both is a located error."""
    if args.pretrained and args.weights is not None:
        from ..errors import SpecError, error

        raise SpecError([error("give --pretrained (the default weights) or --weights, not both", "--pretrained",
                               hint="--weights DEFAULT is --pretrained")])
    return True if args.pretrained else args.weights
