"""archc resolve SPEC : the fully resolved spec, each value with the file:line it came from."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    p = command(sub, "resolve", help="print the spec after extends, edits and --set, with origins",
                       description="Print the spec as archc sees it once 'extends', 'edits' and --set "
                       "are applied; each value is followed by the file:line it came from.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml",
                   help="yaml: the spec with a '# file:line' comment per value (default); json: spec and origins")
    p.add_argument("--no-origins", action="store_true", help="plain YAML, without origin comments")
    add_set(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import resolve

    print(resolve(args.spec, args.set, format=args.format, origins=not args.no_origins), end="")
    return 0
