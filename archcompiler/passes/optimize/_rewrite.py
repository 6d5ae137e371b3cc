"""Small graph edits shared by the optimisation passes (each pass works on its own copy)."""

from __future__ import annotations

import copy

import networkx as nx

from ...ir.lower import invalidate_schedule


def fresh(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` that a pass may change without touching ``g`` (node data, graph data)."""
    out = g.copy()
    out.graph = copy.deepcopy({k: v for k, v in g.graph.items() if k not in ("spec", "_schedule")})
    out.graph["spec"] = g.graph.get("spec")
    for n in out.nodes:
        out.nodes[n].update({k: copy.copy(v) for k, v in out.nodes[n].items() if isinstance(v, (dict, list))})
    return out


def readers(g: nx.DiGraph, node: str) -> list[str]:
    return list(g.successors(node))


def is_output(g: nx.DiGraph, node: str) -> bool:
    return any(o["node"] == node for o in g.graph["outputs"].values())


def bypass(g: nx.DiGraph, node: str) -> None:
    """Remove ``node`` (one input): its readers, outputs and layer outputs take its input instead."""
    (src,) = g.nodes[node]["inputs"]
    for r in readers(g, node):
        g.nodes[r]["inputs"] = [src if i == node else i for i in g.nodes[r]["inputs"]]
        g.add_edge(src, r, shape=g.nodes[src].get("shape"))
    for o in g.graph["outputs"].values():
        if o["node"] == node:
            o["node"] = src
    for layer, holder in g.graph["layer_output"].items():
        if holder == node:
            g.graph["layer_output"][layer] = src
    g.remove_node(node)
    invalidate_schedule(g)


def record(g: nx.DiGraph, name: str, **details) -> None:
    """Note what a pass did (``archc flops --optimized`` reports it)."""
    g.graph.setdefault("optimizations", []).append({"pass": name, **details})
