"""archc validate SPEC... : check specs without building anything (never imports torch)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_features, add_set, command
    p = command(sub, "validate", help="check that specs are valid",
                       description="Validate specs: structure, values, references, shapes, and the "
                                   "output sizes the paper claims (claims: {output: ...}, a table's output "
                                   "column; not under --set, which makes a variant the claims do not "
                                   "describe; params and ops claims: archc check). Exit 0 when all are "
                                   "valid, 1 otherwise.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec file(s)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: one line per spec and per error (default); json: the same as data")
    add_set(p)
    add_features(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import validate

    results = validate(args.specs, args.set)
    if args.format == "json":
        print(json.dumps([{**r, "errors": [d.to_json() for d in r["errors"]]} for r in results], indent=2))
    else:
        for r in results:
            if r["valid"]:
                print(f"ok   {r['file']}: {r['summary']}{_claims_note(r)}")
            else:
                n = len(r["errors"])
                print(f"FAIL {r['file']}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
                for d in r["errors"]:
                    print(f"  {d.format()}", file=sys.stderr)
    return 0 if all(r["valid"] for r in results) else 1


def _claims_note(result: dict) -> str:
    """What the ok line says of the paper's claims: the output sizes validate compared, or why not."""
    n = result["output_claims"]
    if not n:
        return ""
    sizes = f"{n} claimed output size{'s' if n != 1 else ''}"
    if result["claims_compared"]:
        return f"; {sizes} {'match' if n != 1 else 'matches'} (archc check compares params and ops too)"
    return f"; {sizes} not compared under --set (archc check compares them)"
