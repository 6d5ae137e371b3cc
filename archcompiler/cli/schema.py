"""archc schema : the JSON Schema of the spec format, for editors."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import command
    p = command(sub, "schema", help="print the JSON Schema of the spec format",
                       description="Print the JSON Schema of spec files (generated from archc's models). "
                       "Save it and point your editor at it with a first line "
                       "'# yaml-language-server: $schema=PATH'.")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of printing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import schema

    text = schema(args.output)
    if args.output:
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
