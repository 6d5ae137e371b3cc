"""archc diff A B : two specs side by side, row by row."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_set
    p = sub.add_parser("diff", help="compare two specs (or one spec with overrides) row by row",
                       description="Per row: changed attributes, output shape changes, params and MACs "
                       "deltas; then totals. Compare a spec with a variant of itself with --set-b, e.g. "
                       "'archc diff specs/googlenet.yaml specs/googlenet.yaml --set-b num_classes=2'.")
    p.add_argument("a", metavar="A", help="the first spec")
    p.add_argument("b", metavar="B", help="the second spec")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--all", action="store_true", help="list unchanged rows too")
    add_set(p, what=" in both specs")
    add_set(p, "--set-a", "set_a", " in A only")
    add_set(p, "--set-b", "set_b", " in B only")
    p.set_defaults(run=run)


def _signed(n: int) -> str:
    from .tables import human
    if n == 0:
        return "0"
    return ("+" if n > 0 else "-") + human(abs(n))


def run(args: argparse.Namespace) -> int:
    from ..passes.diff import diff
    from ..spec import load_spec
    from .tables import human, render, size

    a = load_spec(args.a, [*args.set, *args.set_a])
    b = load_spec(args.b, [*args.set, *args.set_b])
    result = diff(a, b)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    headers = ["row", "status", "changes", "output A", "output B", "params Δ", "MACs Δ"]
    rows = []
    for r in result["rows"]:
        if r["status"] == "same" and not args.all:
            continue
        changes = "; ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in r["changes"].items())
        out_a, out_b = (size(o) if o else "-" for o in r["output"])
        name = r["name"] + (" *" if r["training_only"] else "")
        rows.append([name, r["status"], changes, out_a, out_b, _signed(r["params"]["delta"]),
                     _signed(r["macs"]["delta"])])
    print(f"A: {result['a']} ({result['a_file']})\nB: {result['b']} ({result['b_file']})\n")
    if rows:
        print(render(headers, rows, args.format if args.format == "markdown" else "table", {5, 6}), end="")
    else:
        print("no differences in any row")
    t = result["total"]
    print()
    for key, label in (("params", "params"), ("macs", "MACs"), ("params_with_training_heads", "params (with training-only heads *)")):
        v = t[key]
        print(f"{label}: {v['a']:,} -> {v['b']:,} ({_signed(v['delta'])}, {human(v['a'])} -> {human(v['b'])})")
    return 0
