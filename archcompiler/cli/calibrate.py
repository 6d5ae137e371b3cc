"""archc calibrate : measure this machine for latency prediction (a machine profile)."""

from __future__ import annotations

import argparse
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
                "A measurement above what the machine can do (its cores x clock x FLOPs per cycle, a read "
                "bandwidth twice the fastest read measured) is taken again, and after a few tries no profile "
                "is written; nor is one when the machine's speed moved more than 3x while it was measured (a "
                "busy machine), unless --force. Writes a profile (JSON) that archc flops --latency and archc "
                "profile read. Under a minute on 2 cores.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the device to measure (default cpu)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the profile (default: ~/.cache/archc/machine-DEVICE.json)")
    p.add_argument("--quick", action="store_true", help="two mid-sized shapes per kind: a few seconds, a rough profile")
    p.add_argument("--force", action="store_true",
                   help="write the profile even when the machine's speed moved more than 3x while it was measured "
                        "(marked as unsteady; a figure above the machine's peak is never written)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import calibrate

    print(f"calibrating {args.device} ({'quick' if args.quick else 'under a minute'})...", file=sys.stderr)
    done = calibrate(args.device, args.output, quick=args.quick, force=args.force)
    print(done["summary"])
    print(f"wrote {done['path']}{' (marked as unsteady: written with --force)' if done['profile'].get('unsteady') else ''}")
    if done["warning"]:
        print(f"warning: {done['warning']}", file=sys.stderr)
    return 0
