"""archc validate SPEC... : check specs without building anything (never imports torch)."""

from __future__ import annotations

import argparse
import dataclasses
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
    from ..errors import ArchcError, GraphError
    from ..passes import shaped_graph
    from ..passes.claims import check_output_claims, count_output_claims
    from ..spec import load_spec

    results, failed = [], False
    for path in args.specs:
        try:
            spec = load_spec(path, args.set)
            g = shaped_graph(spec)
            claimed = count_output_claims(spec)
            # the paper's output sizes describe the spec as written: a --set variant (another class
            # count, another input) is compared by `archc check` only, where differences are expected
            compared = claimed > 0 and not args.set
            if compared:            # the paper's output sizes: of the whole network, whatever features: chooses
                whole = shaped_graph(dataclasses.replace(spec, features=[])) if spec.features else g
                wrong = check_output_claims(spec, whole)
                if wrong:
                    raise GraphError(wrong)
            results.append({"file": path, "valid": True, "summary": spec.summary(), "errors": [],
                            "output_claims": claimed, "claims_compared": compared})
        except ArchcError as exc:
            failed = True
            results.append({"file": path, "valid": False, "errors": [d.to_json() for d in exc.errors],
                            "_exc": exc})
    if args.format == "json":
        print(json.dumps([{k: v for k, v in r.items() if k != "_exc"} for r in results], indent=2))
    else:
        for r in results:
            if r["valid"]:
                print(f"ok   {r['file']}: {r['summary']}{_claims_note(r)}")
            else:
                n = len(r["errors"])
                print(f"FAIL {r['file']}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
                for d in r["_exc"].errors:
                    print(f"  {d.format()}", file=sys.stderr)
    return 1 if failed else 0


def _claims_note(result: dict) -> str:
    """What the ok line says of the paper's claims: the output sizes validate compared, or why not."""
    n = result["output_claims"]
    if not n:
        return ""
    sizes = f"{n} claimed output size{'s' if n != 1 else ''}"
    if result["claims_compared"]:
        return f"; {sizes} {'match' if n != 1 else 'matches'} (archc check compares params and ops too)"
    return f"; {sizes} not compared under --set (archc check compares them)"
