"""Depth as the paper counts it: layers with parameters on the longest path (GoogLeNet: 22),
and with pooling layers too (27).  Only the inference graph counts (auxiliary heads do not)."""

from __future__ import annotations

import networkx as nx

from ..ir import OPS, schedule


def network_depth(g: nx.DiGraph, with_pooling: bool = False) -> int:
    counted = {"params", "pooling"} if with_pooling else {"params"}
    best: dict[str, int] = {}
    for n in schedule(g):
        data = g.nodes[n]
        if data["training_only"]:
            continue
        here = 1 if OPS[data["op"]].depth in counted else 0
        before = [best[i] for i in data["inputs"] if i in best]
        best[n] = here + max(before, default=0)
    return max(best.values(), default=0)
