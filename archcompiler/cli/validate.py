"""archc validate SPEC... : check specs without building anything (never imports torch)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    p = command(sub, "validate", help="check that specs are valid",
                       description="Validate specs: structure, values, references, shapes. Exit 0 when "
                                   "all are valid, 1 otherwise.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec file(s)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: one line per spec and per error (default); json: the same as data")
    add_set(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ArchcError
    from ..ir import lower
    from ..passes import infer_shapes
    from ..spec import load_spec

    results, failed = [], False
    for path in args.specs:
        try:
            spec = load_spec(path, args.set)
            infer_shapes(lower(spec))
            results.append({"file": path, "valid": True, "summary": spec.summary(), "errors": []})
        except ArchcError as exc:
            failed = True
            results.append({"file": path, "valid": False, "errors": [d.to_json() for d in exc.errors],
                            "_exc": exc})
    if args.format == "json":
        print(json.dumps([{k: v for k, v in r.items() if k != "_exc"} for r in results], indent=2))
    else:
        for r in results:
            if r["valid"]:
                print(f"ok   {r['file']}: {r['summary']}")
            else:
                n = len(r["errors"])
                print(f"FAIL {r['file']}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
                for d in r["_exc"].errors:
                    print(f"  {d.format()}", file=sys.stderr)
    return 1 if failed else 0
