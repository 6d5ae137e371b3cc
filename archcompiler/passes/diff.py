"""Differences between two specs, row by row: changed attributes, shapes, params and MACs; or layer
by layer (:func:`layer_diff`), where two specs group the same layers into different rows."""

from __future__ import annotations

import difflib
from typing import Any

import networkx as nx

from ..ir import OPS, schedule
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
            out.append({"name": d["layer"], "node": n, "type": d["op"], "output": list(d["shape"]),
                        "params": d["params"].total, "macs": d["macs"], "training_only": d["training_only"]})
    return out


_SHOWN = 240        # characters of a wiring shown in a diff


def _wiring(g: nx.DiGraph, leaves: dict[str, str]) -> dict[str, tuple[Any, str]]:
    """For each node, what its value is computed from, up to the layers in ``leaves`` (node -> the name it
    is compared by): a key that two graphs share exactly when they wire those layers alike (the ops that
    compute nothing between them, their order, sums in any order; what is its input in evaluation, such as
    dropout, left out), and the same as text."""
    out: dict[str, tuple[Any, str]] = {}
    for n in schedule(g):
        d = g.nodes[n]
        if n in leaves or not d["inputs"]:
            name = leaves.get(n, n)
            out[n] = (name, name)
            continue
        parts = [out[p] for p in d["inputs"]]
        op = OPS[d["op"]]
        if len(parts) == 1 and (op.alias == "eval" or op.passthrough(d["attrs"], [g.nodes[p]["shape"] for p in d["inputs"]])):
            out[n] = parts[0]       # its input itself (in evaluation): dropout, a flatten of a flat vector
            continue
        if op.join == "sum":
            parts = sorted(parts, key=lambda part: repr(part[0]))
        text = f"{d['op']}({', '.join(t for _, t in parts)})"
        out[n] = ((d["op"], tuple(k for k, _ in parts)), text if len(text) <= _SHOWN else text[:_SHOWN] + "...")
    return out


def _reads(ga: nx.DiGraph, gb: nx.DiGraph, pairs: list) -> tuple[dict, dict]:
    """Each paired layer's inputs as wirings (see :func:`_wiring`), A's layers named by their partners'."""
    name_of = {y["node"]: f"{y['name']}" for _, y, *_ in pairs if y}
    partner = {x["node"]: y["node"] for x, y, *_ in pairs if x and y}
    wa = _wiring(ga, {x["node"]: name_of.get(partner.get(x["node"]), f"({x['name']})") for x, *_ in pairs if x})
    wb = _wiring(gb, {y["node"]: name_of[y["node"]] for _, y, *_ in pairs if y})
    reads_a = {x["node"]: [wa[p] for p in ga.nodes[x["node"]]["inputs"]] for x, *_ in pairs if x}
    reads_b = {y["node"]: [wb[p] for p in gb.nodes[y["node"]]["inputs"]] for _, y, *_ in pairs if y}
    return reads_a, reads_b


def _repaired(ga: nx.DiGraph, gb: nx.DiGraph, pairs: list) -> list:
    """Pairs of equal layers that several could pair with (GoogLeNet's two auxiliary classifiers and its
    classifier: the same op, shape and counts) re-paired so that each reads what its partner reads."""
    reads_a, reads_b = _reads(ga, gb, pairs)

    def key(reads: list) -> list:
        return [k for k, _ in reads]
    wrong = [i for i, (x, y, same) in enumerate(pairs) if x and y and same
             and key(reads_a[x["node"]]) != key(reads_b[y["node"]])]
    pairs = list(pairs)
    for i in wrong:
        x, y, _ = pairs[i]
        for j in wrong:
            x2, y2, _ = pairs[j]
            if j != i and key(reads_a[x["node"]]) == key(reads_b[y2["node"]]) and \
                    (x2["type"], x2["output"], x2["params"], x2["macs"]) == (x["type"], x["output"], x["params"], x["macs"]):
                pairs[i], pairs[j] = (x, y2, True), (x2, y, True)
                break
    return pairs


def _rewired(ga: nx.DiGraph, gb: nx.DiGraph, pairs: list, out: list[dict[str, Any]]) -> None:
    """Mark the paired layers whose inputs are wired otherwise than their partners' (same op, shapes and
    counts, other values: two uses of a block whose outputs are read otherwise), with both wirings."""
    reads_a, reads_b = _reads(ga, gb, pairs)
    for (x, y, *_), entry in zip(pairs, out):
        if not (x and y):
            continue
        a, b = reads_a[x["node"]], reads_b[y["node"]]
        if [k for k, _ in a] != [k for k, _ in b]:
            entry["status"] = "changed"
            entry["changes"]["reads"] = [", ".join(t for _, t in a), ", ".join(t for _, t in b)]


def layer_diff(ga: nx.DiGraph, gb: nx.DiGraph) -> list[dict[str, Any]]:
    """Layer by layer: the layers that compute, in the order each network runs them. Two specs with the
    same layer names (a spec and its variant) are paired by name; otherwise the layers are aligned by
    what they compute (op, output shape, params, MACs) whatever their names and rows, so that two specs
    of one network whose rows group its layers differently (a spec imported from a module and the
    paper's table) compare as equal, and a layer that runs at another point of the network (GoogLeNet's
    auxiliary heads, listed where their branch starts or at the end) is paired with its equal wherever
    it is. What is left of a stretch that differs is paired in order (changed), then added or removed.
    Each entry as ``diff``'s rows, with ``name`` (``A's / B's`` where they differ). A pair that computes
    alike but reads other layers (its wiring: what its inputs are computed from, up to the layers that
    compute) is changed, its ``changes["reads"]`` both wirings."""
    la, lb = _computing(ga), _computing(gb)
    key = ("type", "output", "params", "macs")

    def sig(r: dict[str, Any]) -> tuple:
        return tuple(str(r[k]) for k in key)
    pairs: list[tuple[dict | None, dict | None, bool]] = []
    if [x["name"] for x in la] == [y["name"] for y in lb]:      # the same layers (a variant): paired by name
        pairs = [(x, y, sig(x) == sig(y)) for x, y in zip(la, lb)]
    else:
        pairs = _aligned(la, lb, sig)
    pairs = _repaired(ga, gb, pairs)
    out = [_layer_entry(x, y, same) for x, y, same in pairs]
    _rewired(ga, gb, pairs, out)
    return out


def _aligned(la: list[dict], lb: list[dict], sig: Any) -> list[tuple[dict | None, dict | None, bool]]:
    """A's and B's layers paired by what they compute (see :func:`layer_diff`)."""
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
    out: list[tuple[dict | None, dict | None, bool]] = []
    for tag, i1, i2, j1, j2 in blocks:
        if tag == "equal":
            out += [(la[i], lb[j], True) for i, j in zip(range(i1, i2), range(j1, j2))]
            continue
        out += [(la[i], lb[moved[i]], True) for i in range(i1, i2) if i in moved]
        xs = [la[i] for i in range(i1, i2) if i not in moved]
        ys = [lb[j] for j in range(j1, j2) if j not in taken]
        out += [(xs[k] if k < len(xs) else None, ys[k] if k < len(ys) else None, False)
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
