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
    paper's table) compare as equal, and a layer that runs at another point of the network (GoogLeNet's
    auxiliary heads, listed where their branch starts or at the end) is paired with its equal wherever
    it is. What is left of a stretch that differs is paired in order (changed), then added or removed.
    Each entry as ``diff``'s rows, with ``name`` (``A's / B's`` where they differ)."""
    la, lb = _computing(ga), _computing(gb)
    key = ("type", "output", "params", "macs")

    def sig(r: dict[str, Any]) -> tuple:
        return tuple(str(r[k]) for k in key)
    if [x["name"] for x in la] == [y["name"] for y in lb]:      # the same layers (a variant): paired by name
        return [_layer_entry(x, y, sig(x) == sig(y)) for x, y in zip(la, lb)]
    blocks = difflib.SequenceMatcher(None, [sig(x) for x in la], [sig(y) for y in lb], autojunk=False).get_opcodes()
    loose_b: dict[tuple, list[int]] = {}        # a signature -> B's unaligned layers with it, in order
    for tag, _, _, j1, j2 in blocks:
        if tag != "equal":
            for j in range(j1, j2):
                loose_b.setdefault(sig(lb[j]), []).append(j)
    moved: dict[int, int] = {}                  # A's unaligned layer -> B's equal one elsewhere
    for tag, i1, i2, _, _ in blocks:
        if tag != "equal":
            for i in range(i1, i2):
                if loose_b.get(sig(la[i])):
                    moved[i] = loose_b[sig(la[i])].pop(0)
    taken = set(moved.values())
    out: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in blocks:
        if tag == "equal":
            out += [_layer_entry(la[i], lb[j], True) for i, j in zip(range(i1, i2), range(j1, j2))]
            continue
        out += [_layer_entry(la[i], lb[moved[i]], True) for i in range(i1, i2) if i in moved]
        xs = [la[i] for i in range(i1, i2) if i not in moved]
        ys = [lb[j] for j in range(j1, j2) if j not in taken]
        out += [_layer_entry(xs[k] if k < len(xs) else None, ys[k] if k < len(ys) else None, False)
                for k in range(max(len(xs), len(ys)))]
    return out


def _layer_entry(x: dict[str, Any] | None, y: dict[str, Any] | None, same: bool) -> dict[str, Any]:
    """One entry of :func:`layer_diff`: A's layer ``x`` against B's ``y`` (None: it has none)."""
    status = "same" if same else "changed" if x and y else "added" if y else "removed"
    names = [r["name"] for r in (x, y) if r]
    r = y or x
    entry: dict[str, Any] = {
        "name": names[0] if len(set(names)) == 1 else " / ".join(names), "status": status,
        "type": r["type"] if not (x and y) or x["type"] == y["type"] else f"{x['type']} -> {y['type']}",
        "output": [x and x["output"], y and y["output"]], "changes": {}, "training_only": r["training_only"]}
    for field in ("params", "macs"):
        va, vb = (x[field] if x else 0), (y[field] if y else 0)
        entry[field] = {"a": va, "b": vb, "delta": vb - va}
    return entry
