"""Shape inference: every node gets ``shape`` (per sample), every edge the shape it carries."""

from __future__ import annotations

import networkx as nx

from ..errors import GraphError, error
from ..ir import OPS, ShapeError, schedule


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def infer_shapes(g: nx.DiGraph) -> nx.DiGraph:
    """Annotate ``g`` in place (and return it); raise :class:`GraphError` with every located
    problem, each at the spec line of the layer that caused it."""
    problems = []
    for node in schedule(g):
        data = g.nodes[node]
        ins = [g.nodes[i].get("shape") for i in data["inputs"]]
        if any(s is None for s in ins):
            data["shape"] = None         # an input already failed; do not pile up errors
            continue
        try:
            data["shape"] = tuple(OPS[data["op"]].shape(data["attrs"], ins))
        except ShapeError as exc:
            data["shape"] = None
            inputs = ", ".join(f"{i} ({_fmt(s)})" for i, s in zip(data["inputs"], ins))
            problems.append(error(f"{exc}", data["layer"], data["loc"],
                                  hint=f"inputs: {inputs}" if inputs else None))
    if problems:
        raise GraphError(problems)
    for u, v in g.edges:
        g.edges[u, v]["shape"] = g.nodes[u]["shape"]
    return g
