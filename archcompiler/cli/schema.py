"""archc schema : the JSON Schema of the spec format, for editors."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import command
    p = command(sub, "schema", help="print the JSON Schema of the spec format",
                       description="Print the JSON Schema of spec files (generated from archc's models). "
                       "Save it and point your editor at it with a first line "
                       "'# yaml-language-server: $schema=PATH'.")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of printing")
    p.set_defaults(run=run)


def schema_text() -> str:
    from ..spec.document import schema_model
    from ..spec.expr import FUNCTIONS

    schema = schema_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archc spec"
    schema["description"] = ("An archc architecture spec. Numeric fields also take expressions over "
                             "params and block arguments, e.g. 'num_classes' or 'round_to(64 * width, 8)'; "
                             f"functions: {', '.join(sorted(FUNCTIONS))}.")
    _allow_expressions(schema)
    return json.dumps(schema, indent=2) + "\n"


def _allow_expressions(node: object) -> None:
    """Numbers in layer fields may be written as expressions: let editors accept strings there."""
    if isinstance(node, dict):
        for value in list(node.values()):
            _allow_expressions(value)
        if node.get("type") in ("integer", "number") and "enum" not in node:
            kind = node.pop("type")
            bounds = {k: node.pop(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                      if k in node}
            node["anyOf"] = [{"type": kind, **bounds}, {"type": "string", "description": "an expression"}]
    elif isinstance(node, list):
        for value in node:
            _allow_expressions(value)


def run(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output:
        from ..io import write_text
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
