"""Activation memory: bytes per node, and the peak of live activations during one pass.

Schedule: the graph's topological order with ties broken by declaration order (the order the
generated forward() runs in).  A tensor is live from the op that makes it until its last
consumer has run; the input image counts; nothing is computed in place.
"""

from __future__ import annotations

import math

import networkx as nx

from ..ir import schedule


def annotate_memory(g: nx.DiGraph, batch: int = 1, bytes_per_element: int = 4,
                    training: bool = False) -> int:
    """Set ``activation_bytes`` on each node; return the peak live bytes of an inference
    (``training=False``: training-only nodes are skipped) or training forward pass."""
    order = [n for n in schedule(g) if training or not g.nodes[n]["training_only"]]
    for n in g.nodes:
        g.nodes[n]["activation_bytes"] = batch * bytes_per_element * math.prod(g.nodes[n]["shape"])
    outputs = {o["node"] for o in g.graph["outputs"].values() if training or not o["training_only"]}
    position = {n: i for i, n in enumerate(order)}
    last_use = {n: max([position[s] for s in g.successors(n) if s in position], default=position[n])
                for n in order}
    live = peak = 0
    freeing: dict[int, list[str]] = {}
    for n, i in last_use.items():
        if n not in outputs:
            freeing.setdefault(i, []).append(n)
    for i, n in enumerate(order):
        live += g.nodes[n]["activation_bytes"]
        peak = max(peak, live)
        for done in freeing.get(i, []):
            live -= g.nodes[done]["activation_bytes"]
    return peak
