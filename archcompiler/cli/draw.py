"""archc draw SPEC : the architecture as a diagram (SVG, PNG, PDF or DOT)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_features, add_set, command
    from .flops import positive
    p = command(sub, "draw", help="draw the architecture (graphviz)",
                       description="Draw the network from the spec (or from a model.pt written by "
                       "'archc build -o'). Block instances are clusters labelled with their table row; "
                       "edges carry tensor shapes; training-only heads are dashed.")
    p.add_argument("spec", metavar="SPEC", help="a spec, or a model file written by 'archc build -o'")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default: SPEC_NAME.svg here; '-' prints it)")
    p.add_argument("--format", choices=["svg", "png", "pdf", "dot"], help="default: from the file extension")
    p.add_argument("--collapse", action="store_true", help="one node per block instance")
    p.add_argument("--depth", type=positive, metavar="N", help="expand block instances down to depth N")
    p.add_argument("--color", choices=["none", "flops", "params"], default="none",
                   help="shade nodes by their share of the cost")
    p.add_argument("--rankdir", choices=["TB", "LR"], default="TB", help="top-to-bottom or left-to-right")
    p.add_argument("--optimized", action="store_true",
                   help="draw the graph after the inference passes (BatchNorm folded, ReLU fused, heads removed)")
    p.add_argument("--force", action="store_true",
                   help="replace the default output file even when archc did not write it")
    add_set(p)
    add_features(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import DrawOptions, draw

    options = DrawOptions(collapse=args.collapse, depth=args.depth, color=args.color, rankdir=args.rankdir,
                          optimized=args.optimized)
    result = draw(args.spec, args.output, options, format=args.format, overrides=args.set, force=args.force)
    if result.path is None:         # -o -: the drawing itself on standard output, for a pipe
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
    else:
        print(f"wrote {result.path}")
    return 0
