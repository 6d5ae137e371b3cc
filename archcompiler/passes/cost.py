"""Cost: parameters (weights, biases, buffers apart), MACs and element operations per node."""

from __future__ import annotations

import networkx as nx

from ..ir import OPS


def annotate_cost(g: nx.DiGraph) -> nx.DiGraph:
    """Per node: ``params`` (:class:`~archcompiler.ir.Params`), ``macs``, ``elementwise``;
    all per sample. Needs shapes."""
    for _, data in g.nodes(data=True):
        op = OPS[data["op"]]
        ins = [g.nodes[i]["shape"] for i in data["inputs"]]
        out = data["shape"]
        data["params"] = op.params(data["attrs"], ins, out)
        data["macs"] = int(op.macs(data["attrs"], ins, out))
        data["elementwise"] = int(op.elementwise(data["attrs"], ins, out))
    return g
