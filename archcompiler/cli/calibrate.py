"""archc calibrate : measure this machine for latency prediction (a machine profile)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import command

    p = command(sub, "calibrate", help="measure this machine for latency prediction",
                description="Time the kernels networks are made of (convolutions 1x1 to 7x7 and depthwise, "
                "fully connected layers, pooling, normalisation, concatenation) on a grid of shapes, in both "
                "memory layouts, each with its fixed cost, warm (data in the cache) and with the caches flushed "
                "(as in a network too large for them), and measure memory bandwidth and per-statement "
                "overhead. Each time is the median of a few runs, relative to a reference kernel timed just "
                "before it (a machine whose speed moves while it is measured gets a more consistent profile). "
                "Writes a profile (JSON) that archc flops --latency and archc profile read. Under a minute on "
                "2 cores.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the device to measure (default cpu)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the profile (default: ~/.cache/archc/machine-DEVICE.json)")
    p.add_argument("--quick", action="store_true", help="two mid-sized shapes per kind: a few seconds, a rough profile")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io import write_text
    from ..measure.calibrate import calibrate, main_progress, summarize
    from ..passes.latency import default_profile_path, unsteady

    print(f"calibrating {args.device} ({'quick' if args.quick else 'under a minute'})...", file=sys.stderr)
    profile = calibrate(args.device, progress=main_progress, quick=args.quick)
    path = args.output or default_profile_path(args.device)
    write_text(path, json.dumps(profile, indent=1))
    print(summarize(profile))
    print(f"wrote {path}")
    warning = unsteady(profile)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
