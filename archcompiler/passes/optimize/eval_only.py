"""Inference only: the training-only heads (and the outputs they feed) and dropout go.

Dropout is the identity in eval mode (the op table's ``alias="eval"``), and the auxiliary
classifiers run in training mode only, so neither changes what an eval-mode module computes.
"""

from __future__ import annotations

import networkx as nx

from ...ir import OPS
from ._rewrite import bypass, fresh, record


def eval_only(g: nx.DiGraph) -> nx.DiGraph:
    g = fresh(g)
    heads = [n for n, d in g.nodes(data=True) if d["training_only"]]
    g.remove_nodes_from(heads)
    g.graph["outputs"] = {k: v for k, v in g.graph["outputs"].items() if not v["training_only"]}
    g.graph["layer_output"] = {k: v for k, v in g.graph["layer_output"].items() if v in g}
    if heads:
        record(g, "eval_only", removed=sorted(heads), what="training-only heads")
    dropouts = [n for n, d in g.nodes(data=True) if OPS[d["op"]].alias == "eval"]   # the input in eval mode
    for n in dropouts:
        bypass(g, n)
    if dropouts:
        record(g, "eval_only", removed=sorted(dropouts), what="dropout")
    g.graph.pop("_schedule", None)
    return g
