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
    from pathlib import Path

    from ..api import report
    from ..errors import SpecError, error
    from ..io import check_default_output, refuse_inputs
    from ..spec import load_spec

    if args.sweep or (args.spec and args.spec.endswith(".json")):
        return run_sweep(args)
    if not args.spec:
        raise SpecError([error("archc report needs a SPEC (or --sweep DIR)", "SPEC",
                               hint="e.g. archc report specs/googlenet.yaml")])
    from ..pretrained import is_weights_name, resolve

    if args.weights is not None and not is_weights_name(args.weights):
        raise SpecError([error(f"archc report describes the network, not a file of weights: --weights takes the "
                               f"name of published weights, not {args.weights}", "--weights",
                               hint="e.g. --weights IMAGENET1K_V1, or --pretrained")])
    published = resolve(args.spec, args.weights, args.pretrained, args.set, fetch_file=False)
    spec = load_spec(args.spec, published.overrides)
    out = Path(args.output or f"{spec.name}-report.html")
    refuse_inputs(out, [args.spec])
    if not args.output:
        check_default_output(out, args.force)
    if args.profile:
        print("measuring every row (importing torch)...", file=sys.stderr)
    report(spec, out, batch=args.batch, machine=args.machine, profile=args.profile)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..api import sweep_report
    from ..errors import SpecError, error
    from ..io import check_default_output

    if args.sweep and args.spec:
        raise SpecError([error("give a SPEC or --sweep DIR, not both", "--sweep")])
    source = Path(args.sweep or args.spec)
    folder = source if source.is_dir() else source.parent
    out = Path(args.output or folder / "sweep-report.html")
    if not args.output:
        check_default_output(out, args.force)
    sweep_report(source, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
