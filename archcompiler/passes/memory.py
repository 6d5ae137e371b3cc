"""Activation memory: bytes per node, and the peak of live activations during one pass.

The pass follows the plan the generated ``forward()`` runs (:func:`archcompiler.ir.plan.plan`):
the same order; the input, which the caller holds, alive throughout; views, pass-throughs, dropout
in eval mode and in-place activations sharing their input's memory; each op's transient workspace
from the op table (LRN's temporaries, max pooling's indices); and every other tensor freed after
its last reader. ``tests/test_memory.py`` checks the figure against the live tensors of a real
forward pass.
"""

from __future__ import annotations

import math

import networkx as nx

from ..ir import OPS
from ..ir.lower import INPUT
from ..ir.plan import plan


def annotate_memory(g: nx.DiGraph, batch: int = 1, bytes_per_element: int = 4,
                    training: bool = False) -> int:
    """Set ``activation_bytes`` on each node; return the peak live bytes of an inference
    (``training=False``: training-only nodes are skipped) or training forward pass."""
    for n in g.nodes:
        g.nodes[n]["activation_bytes"] = batch * bytes_per_element * math.prod(g.nodes[n]["shape"])
    run = plan(g, heads=True)
    order = run.order          # in eval mode the training-only nodes are skipped, but a tensor they
    alias = dict(run.alias)    # read lives until they would have run (the generated code's `del`)
    if training:        # dropout makes a new tensor in training mode
        alias = {n: src for n, src in alias.items() if g.nodes[n]["op"] != "dropout"}

    def buffer(n: str) -> str:
        while n in alias:
            n = alias[n]
        return n

    end = len(order)
    last: dict[str, int] = {INPUT: end}                          # the caller holds the input
    for i, n in enumerate(order):
        last[buffer(n)] = max(last.get(buffer(n), i), i)
        for src in g.nodes[n]["inputs"]:
            last[buffer(src)] = max(last.get(buffer(src), i), i)
    for name in run.result_of.values():                          # returned: alive to the end
        last[buffer(name)] = end
    freeing: dict[int, list[str]] = {}
    for b, i in last.items():
        freeing.setdefault(i, []).append(b)
    live = peak = g.nodes[INPUT]["activation_bytes"]
    for i, n in enumerate(order):
        data = g.nodes[n]
        runs = training or not data["training_only"]
        if buffer(n) == n and runs:
            live += data["activation_bytes"]
        ins = [g.nodes[p]["shape"] for p in data["inputs"]]
        work = batch * bytes_per_element * OPS[data["op"]].workspace(data["attrs"], ins, data["shape"])
        peak = max(peak, live + work if runs else live)
        for done in freeing.get(i, []):
            if training or not g.nodes[done]["training_only"]:
                live -= g.nodes[done]["activation_bytes"]
    return peak
