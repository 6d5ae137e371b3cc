"""Differences between two specs, row by row: changed attributes, shapes, params and MACs; or layer
by layer (:func:`layer_diff`), where two specs group the same layers into different rows."""

from __future__ import annotations

import difflib
from typing import Any

import networkx as nx

from ..ir import schedule
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


def diff(a: Spec, b: Spec, layers: bool = False) -> dict[str, Any]:
    """``{"a": name, "b": name, "params": {name: [a, b]}, "rows": [...], "total": {...}}`` (``params``: the
    spec parameters that differ, such as ResNeXt's ``groups``); each row has ``name``, ``status``
    (same / changed / added / removed), ``changes`` (field: [a, b]), ``output`` [a, b], and
    ``params`` / ``macs`` as ``{"a", "b", "delta"}``. ``layers``: the rows are :func:`layer_diff`'s."""
    ga, gb = annotated_graph(a), annotated_graph(b)
    out_rows = layer_diff(ga, gb) if layers else _row_diff(a, b, ga, gb)
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


def _row_diff(a: Spec, b: Spec, ga: nx.DiGraph, gb: nx.DiGraph) -> list[dict[str, Any]]:
    """The rows, matched by name."""
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
    return out_rows


def _computing(g: nx.DiGraph) -> list[dict[str, Any]]:
    """The layers that compute (with parameters or multiply-adds), in the order the network runs them."""
    out = []
    for n in schedule(g):
        d = g.nodes[n]
        if d["inputs"] and (d["params"].total or d["macs"]):
            out.append({"name": d["layer"], "type": d["op"], "output": list(d["shape"]), "params": d["params"].total,
                        "macs": d["macs"], "training_only": d["training_only"]})
    return out


def layer_diff(ga: nx.DiGraph, gb: nx.DiGraph) -> list[dict[str, Any]]:
    """Layer by layer: the layers that compute, in the order each network runs them. Two specs with the
    same layer names (a spec and its variant) are paired by name; otherwise the layers are aligned by
    what they compute (op, output shape, params, MACs) whatever their names and rows, so that two specs
    of one network whose rows group its layers differently (a spec imported from a module and the
    paper's table) compare as equal. Each entry as ``diff``'s rows, with ``name`` (``A's / B's`` where they
    differ)."""
    la, lb = _computing(ga), _computing(gb)
    if [x["name"] for x in la] == [y["name"] for y in lb]:      # the same layers (a variant): paired by name
        blocks = [("equal" if all(x[k] == y[k] for k in ("type", "output", "params", "macs")) else "replace",
                   i, i + 1, i, i + 1) for i, (x, y) in enumerate(zip(la, lb))]
    else:
        key = ("type", "output", "params", "macs")
        blocks = difflib.SequenceMatcher(None, [tuple(map(str, (x[k] for k in key))) for x in la],
                                         [tuple(map(str, (y[k] for k in key))) for y in lb],
                                         autojunk=False).get_opcodes()
    out: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in blocks:
        xs, ys = la[i1:i2], lb[j1:j2]
        for k in range(max(len(xs), len(ys))):
            x = xs[k] if k < len(xs) else None
            y = ys[k] if k < len(ys) else None
            status = "same" if tag == "equal" else "changed" if x and y else "added" if y else "removed"
            names = [r["name"] for r in (x, y) if r]
            entry: dict[str, Any] = {
                "name": names[0] if len(set(names)) == 1 else " / ".join(names), "status": status,
                "type": (y or x)["type"] if not (x and y) or x["type"] == y["type"] else f"{x['type']} -> {y['type']}",
                "output": [x and x["output"], y and y["output"]], "changes": {},
                "training_only": (y or x)["training_only"]}
            for field in ("params", "macs"):
                va, vb = (x[field] if x else 0), (y[field] if y else 0)
                entry[field] = {"a": va, "b": vb, "delta": vb - va}
            out.append(entry)
    return out
