"""archc diff A B : two specs side by side, row by row (or layer by layer: --layers)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    p = command(sub, "diff", help="compare two specs (or one spec with overrides) row by row",
                       description="Per row: changed attributes, output shape changes, params and MACs "
                       "deltas; then totals. Compare a spec with a variant of itself with --set-b, e.g. "
                       "'archc diff specs/googlenet.yaml specs/googlenet.yaml --set-b num_classes=2'.")
    p.add_argument("a", metavar="A", help="the first spec")
    p.add_argument("b", metavar="B", help="the second spec")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table",
                   help="table (default), json or markdown")
    p.add_argument("--all", action="store_true", help="list unchanged rows too")
    p.add_argument("--layers", action="store_true",
                   help="compare layer by layer (each layer that computes, in the order the network runs them, "
                        "matched by op, output shape, params and MACs, whatever its name): two specs that group "
                        "the same layers into different rows, such as an imported spec and the paper's table")
    add_set(p, what=" in both specs")
    add_set(p, "--set-a", "set_a", " in A only")
    add_set(p, "--set-b", "set_b", " in B only")
    p.set_defaults(run=run)


def _signed(n: int) -> str:
    from .tables import human
    if n == 0:
        return "0"
    return ("+" if n > 0 else "-") + human(abs(n))


def _value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        inner = ", ".join(f"{k}={_value(x)}" for k, x in v.items() if k != "kind")
        return f"{v.get('kind', '')}({inner})"
    if isinstance(v, list):
        return "x".join(map(str, v)) if all(isinstance(x, int) for x in v) else str(v)
    return str(v)


def describe(changes: dict[str, list]) -> list[str]:
    """Readable lines for a row's changes: a changed op shows the layer before and after; the
    same change in several layers of a block is listed once, with the layers it applies to."""
    per_layer: dict[str, dict[str, list]] = {}
    plain: list[str] = []
    for key, (a, b) in changes.items():
        if key.startswith("#") or key == "input":
            plain.append(f"{key}: {_value(a)} -> {_value(b)}")
            continue
        layer, _, field = key.rpartition(".")
        per_layer.setdefault(layer, {})[field] = [a, b]
    grouped: dict[tuple, list[str]] = {}
    for layer, fields in per_layer.items():
        if "op" in fields:
            def show(i: int, fields: dict = fields) -> str:
                args = ", ".join(f"{k}={_value(v[i])}" for k, v in fields.items() if k != "op" and v[i] is not None)
                return f"{fields['op'][i]}({args})"
            plain.append(f"{layer + ': ' if layer else ''}{show(0)} -> {show(1)}")
            continue
        for field, (a, b) in fields.items():
            grouped.setdefault((field, _value(a), _value(b)), []).append(layer)
    for (field, a, b), layers in grouped.items():
        where = f"  [{_layers(layers)}]" if any(layers) else ""
        plain.append(f"{field}: {a} -> {b}{where}")
    return plain


def _layers(layers: list[str]) -> str:
    """``0/conv1, 0/conv2, 1/conv1, 1/conv2`` -> ``conv1, conv2 of blocks 0-1``: the same layers of every
    repeat of a row, said once."""
    split = [name.partition("/") for name in layers]
    if len(layers) > 1 and all(i.isdigit() and rest for i, _, rest in split):
        inner = list(dict.fromkeys(rest for _, _, rest in split))
        blocks = sorted({int(i) for i, _, _ in split})
        if len(blocks) > 1 and len(layers) == len(inner) * len(blocks) and blocks == list(range(blocks[0], blocks[-1] + 1)):
            return f"{', '.join(inner)} of blocks {blocks[0]}-{blocks[-1]}"
    return ", ".join(layers)


def run(args: argparse.Namespace) -> int:
    from ..api import diff
    from .tables import human, render, size

    result = diff(args.a, args.b, [*args.set, *args.set_a], [*args.set, *args.set_b], layers=args.layers)
    unit = "layer" if args.layers else "row"
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    shown = [r for r in result["rows"] if r["status"] != "same" or args.all]
    if args.layers:                 # a layer's statements share its name: say which op each is
        shown = [{**r, "name": f"{r['name']} ({r['type']})"} for r in shown]
    print(f"A: {result['a']} ({result['a_source']})\nB: {result['b']} ({result['b_source']})")
    if result["params"]:
        print("spec params: " + ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, (a, b) in result["params"].items()))
    print()
    if not shown:
        print(f"no differences in any {unit}")
    elif args.format == "markdown":
        headers = [unit, "status", "changes", "output A", "output B", "params Δ", "MACs Δ"]
        rows = [[r["name"] + (" *" if r["training_only"] else ""), r["status"], "<br>".join(describe(r["changes"])),
                 *(size(o) if o else "-" for o in r["output"]), _signed(r["params"]["delta"]),
                 _signed(r["macs"]["delta"])] for r in shown]
        print(render(headers, rows, "markdown", {5, 6}), end="")
    else:
        headers = [unit, "status", "output A", "output B", "params Δ", "MACs Δ"]
        rows = [[r["name"] + (" *" if r["training_only"] else ""), r["status"],
                 *(size(o) if o else "-" for o in r["output"]), _signed(r["params"]["delta"]),
                 _signed(r["macs"]["delta"])] for r in shown]
        table = render(headers, rows, "table", {4, 5}).splitlines()
        print("\n".join(table[:2]))
        for line, r in zip(table[2:], shown):
            print(line)
            for change in describe(r["changes"]):
                print(f"    {change}")
    t = result["total"]
    print()
    for key, label in (("params", "params"), ("macs", "MACs"),
                       ("params_with_training_heads", "params (with training-only heads *)")):
        v = t[key]
        print(f"{label}: {v['a']:,} -> {v['b']:,} ({_signed(v['delta'])}, {human(v['a'])} -> {human(v['b'])})")
    return 0
