"""Differences between two specs, row by row: changed attributes, shapes, params and MACs."""

from __future__ import annotations

from typing import Any

from ..spec import Spec
from ..util import shape_text
from .analyze import annotated_graph, rows, totals

_IGNORE = {"claims", "doc", "input", "inputs", "name"}


def _layer_fields(spec: Spec, row: str) -> dict[str, Any]:
    """Every attribute of a row's layers, flattened: {'5x5.kernel': 5, ...} (or {'kernel': 3})."""
    out: dict[str, Any] = {}
    for layer in spec.layers:
        if layer.row != row:
            continue
        local = layer.name[len(row) + 1:] if layer.name != row else ""
        for key, value in layer.spec.model_dump(exclude=_IGNORE).items():
            out[f"{local}.{key}" if local else key] = value
    if row in spec.instances:
        for key, value in spec.instances[row].args.items():
            out[f"#{key}"] = value
    return out


def diff(a: Spec, b: Spec) -> dict[str, Any]:
    """``{"a": name, "b": name, "params": {name: [a, b]}, "rows": [...], "total": {...}}`` (``params``: the
    spec parameters that differ, such as ResNeXt's ``groups``); each row has ``name``, ``status``
    (same / changed / added / removed), ``changes`` (field: [a, b]), ``output`` [a, b], and
    ``params`` / ``macs`` as ``{"a", "b", "delta"}``."""
    ga, gb = annotated_graph(a), annotated_graph(b)
    ra = {r["name"]: r for r in rows(ga, a)}
    rb = {r["name"]: r for r in rows(gb, b)}
    names = list(ra)
    for i, name in enumerate(rb):
        if name not in ra:
            before = list(rb)[:i]
            at = max([names.index(n) + 1 for n in before if n in names], default=0)
            names.insert(at, name)
    out_rows = []
    for name in names:
        x, y = ra.get(name), rb.get(name)
        entry: dict[str, Any] = {"name": name}
        if x is None or y is None:
            entry["status"] = "added" if x is None else "removed"
            r = y or x
            entry["type"] = r["type"]
            entry["output"] = [None if x is None else x["output"], None if y is None else y["output"]]
            entry["changes"] = {}
        else:
            fa, fb = _layer_fields(a, name), _layer_fields(b, name)
            changes = {k: [fa.get(k), fb.get(k)] for k in list(fa) + [k for k in fb if k not in fa]
                       if fa.get(k) != fb.get(k)}
            if x["input"] != y["input"]:
                changes["input"] = [shape_text(x["input"] or []), shape_text(y["input"] or [])]
            entry["type"] = y["type"] if x["type"] == y["type"] else f"{x['type']} -> {y['type']}"
            entry["output"] = [x["output"], y["output"]]
            entry["changes"] = changes
            same = not changes and x["output"] == y["output"] and x["params"] == y["params"] \
                and x["macs"] == y["macs"]
            entry["status"] = "same" if same else "changed"
        for key in ("params", "macs"):
            va = x[key] if x else 0
            vb = y[key] if y else 0
            entry[key] = {"a": va, "b": vb, "delta": vb - va}
        entry["training_only"] = (y or x)["training_only"]
        out_rows.append(entry)
    ta, tb = totals(ga), totals(gb)
    tta, ttb = totals(ga, training=True), totals(gb, training=True)
    total = {}
    for key in ("params", "macs", "flops"):
        total[key] = {"a": ta[key], "b": tb[key], "delta": tb[key] - ta[key]}
        total[f"{key}_with_training_heads"] = {"a": tta[key], "b": ttb[key], "delta": ttb[key] - tta[key]}
    params = {k: [a.params.get(k), b.params.get(k)] for k in [*a.params, *(k for k in b.params if k not in a.params)]
              if a.params.get(k) != b.params.get(k)}
    return {"a": a.name, "b": b.name, "a_file": a.file, "b_file": b.file, "params": params, "rows": out_rows,
            "total": total}
