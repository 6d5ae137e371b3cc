"""Lowering: a resolved :class:`~archcompiler.spec.Spec` becomes a networkx DiGraph of primitive ops.

One node per primitive op, named hierarchically after the spec (``inception_4b/3x3_reduce``).
A spec layer may become several primitives; the rule for their names is:

- the layer's main op takes the layer's name (``conv1``, ``fc``);
- with a norm, a conv becomes ``<name>/conv`` and ``<name>/bn`` (as torchvision's BasicConv2d);
- an activation is ``<name>/relu`` (``/sigmoid``, ...), a linear's implicit flatten ``<name>/flatten``.

Node data: ``op`` (an IR kind of the op registry, :data:`archcompiler.ops.KINDS`), ``attrs``, ``inputs`` (ordered
node ids), ``layer`` (spec layer), ``row`` (top-level row: table row or layer), ``group``
(innermost block instance), ``loc`` (source location), ``order`` (declaration order) and
``training_only``.  Edges are tensors; :func:`archcompiler.passes.shapes.infer_shapes` puts
their shapes on them.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from ..errors import GraphError, error
from ..ops import registry
from ..spec import Spec

INPUT = "input"


def lower(spec: Spec) -> nx.DiGraph:
    """The IR graph of ``spec`` (shapes not yet inferred: see :func:`archcompiler.analyze`)."""
    g = nx.DiGraph(name=spec.name, input=tuple(spec.input), spec=spec)
    g.add_node(INPUT, op=INPUT, attrs={"shape": tuple(spec.input)}, inputs=[], layer=INPUT,
               row=INPUT, group=None, loc=None, order=0, role="input", spec_op="input")
    last: dict[str, str] = {INPUT: INPUT}     # spec layer -> the node holding its output
    ops = registry()
    for index, layer in _dependency_order(spec):
        prims = ops.lowerings[type(layer.spec)](layer.spec)
        for _, kind, attrs in prims:        # an op module's lowering writes the attributes its kinds declare
            if not set(attrs) <= set(ops.kinds[kind].attrs):
                raise TypeError(f"{layer.spec.op}'s lowering writes {sorted(set(attrs) - set(ops.kinds[kind].attrs))} "
                                f"that {kind} does not declare")
        prev = [last[i] for i in layer.inputs]
        order = index * 8 + 1                 # declaration order (a layer has at most 4 primitives)
        for suffix, kind, attrs in prims:
            node = layer.name + suffix
            g.add_node(node, op=kind, attrs=attrs, inputs=list(prev), layer=layer.name, row=layer.row,
                       group=layer.group, loc=layer.loc, order=order,
                       role=suffix.lstrip("/") or "main", spec_op=layer.op)
            order += 1
            for p in prev:
                g.add_edge(p, node)
            prev = [node]
        last[layer.name] = prev[0]
    g.graph["layer_output"] = last
    outputs = {}
    for out in spec.outputs.values():
        outputs[out.name] = {"node": last[out.layer], "layer": out.layer, "loss": out.loss,
                             "weight": out.weight, "training_only": out.training_only}
    g.graph["outputs"] = outputs
    _refuse_unused_layers(g)
    _mark_training_only(g)
    return g


def _dependency_order(spec: Spec) -> list[tuple[int, Any]]:
    """Layers in an order where each comes after the layers it reads (a layer may name a later one
    as its input), declaration order otherwise; a cycle is a located error."""
    import heapq

    index = {layer.name: i for i, layer in enumerate(spec.layers)}
    waiting = {i: {index[n] for n in layer.inputs if n != INPUT} for i, layer in enumerate(spec.layers)}
    readers: dict[int, list[int]] = {}
    for i, needs in waiting.items():
        for j in needs:
            readers.setdefault(j, []).append(i)
    ready = [i for i, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append((i, spec.layers[i]))
        for r in readers.get(i, []):
            waiting[r].discard(i)
            if not waiting[r]:
                heapq.heappush(ready, r)
    if len(out) < len(spec.layers):
        done = {i for i, _ in out}
        stuck = [i for i in range(len(spec.layers)) if i not in done]
        cycle = _find_cycle(stuck, waiting)
        names = " -> ".join(spec.layers[i].name for i in [*cycle, cycle[0]])
        first = spec.layers[cycle[0]]
        raise GraphError([error(f"layers read each other in a cycle: {names}", first.name, first.loc,
                                hint="a layer's input must be computed before it; check the 'input' fields")])
    return out


def _find_cycle(stuck: list[int], waiting: dict[int, set[int]]) -> list[int]:
    """One cycle among layers that wait on each other (walk back until a layer repeats)."""
    path, seen, node = [], {}, stuck[0]
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(waiting[node])
    return path[seen[node]:]


def _refuse_unused_layers(g: nx.DiGraph) -> None:
    """A layer that no output depends on is almost always a wiring mistake: say where."""
    used: set[str] = {INPUT}
    for out in g.graph["outputs"].values():
        used |= nx.ancestors(g, out["node"]) | {out["node"]}
    unused: dict[str, Any] = {}
    for node, data in g.nodes(data=True):
        if node not in used:
            unused.setdefault(data["layer"], data["loc"])
    if unused:
        names = ", ".join(g.graph["outputs"])
        raise GraphError([error(f"layer {layer!r} feeds no output", layer, loc,
                                hint=f"connect it to a later layer, or list it under 'outputs' (now: {names})")
                          for layer, loc in unused.items()])


def _mark_training_only(g: nx.DiGraph) -> None:
    """A node is training-only when no inference output depends on it."""
    needed: set[str] = set()
    for out in g.graph["outputs"].values():
        if not out["training_only"]:
            needed |= nx.ancestors(g, out["node"]) | {out["node"]}
    for node, data in g.nodes(data=True):
        data["training_only"] = node not in needed


def schedule(g: nx.DiGraph) -> list[str]:
    """The execution order used everywhere: topological, ties broken by declaration order
    (cached on the graph; a pass that rewires edges calls :func:`invalidate_schedule`)."""
    key = g.number_of_nodes()
    cached = g.graph.get("_schedule")
    if cached is None or cached[0] != key:
        order = list(nx.lexicographical_topological_sort(g, key=lambda n: g.nodes[n]["order"]))
        g.graph["_schedule"] = cached = (key, order)
    return list(cached[1])


def invalidate_schedule(g: nx.DiGraph) -> None:
    g.graph.pop("_schedule", None)
