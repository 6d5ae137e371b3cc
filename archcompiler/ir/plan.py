"""How a network runs: the order of its ops, what it returns, which ops reuse their input's memory.

The torch backend generates ``forward()`` from this plan, and the memory pass predicts peak memory
from the same plan, so the prediction describes the code that really runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ..ops import KINDS as OPS
from .lower import INPUT, schedule


@dataclass(frozen=True)
class Plan:
    order: list[str]                 # nodes forward() computes, in order (training-only ones included
                                     # when the module has its heads; they run in training mode only)
    result_of: dict[str, str]        # output name -> the node whose value forward() returns for it
    consumers: dict[str, list[int]]  # node -> positions in `order` of the nodes that read it
    inplace: frozenset[str]          # ops computed in place, over their input
    alias: dict[str, str]            # node -> the node whose tensor it returns or shares (no new memory)


def _order(g: nx.DiGraph, heads: bool) -> list[str]:
    """Inference nodes in schedule order; training-only nodes right after their inputs are ready
    (as torchvision computes aux1 right after inception4a), so no tensor is kept alive longer."""
    base = [n for n in schedule(g) if n != INPUT and not g.nodes[n]["training_only"]]
    if not heads:
        return base
    order = list(base)
    for n in (n for n in schedule(g) if g.nodes[n]["training_only"]):
        after = max(order.index(i) if i in order else -1 for i in g.nodes[n]["inputs"])
        order.insert(after + 1, n)
    return order


def _may_overwrite(g: nx.DiGraph, tensor: str, consumers: dict[str, list[int]], results: set[str],
                   alias: dict[str, str]) -> bool:
    """Whether an op may compute in place over ``tensor``: this op is its only reader, it is no model output,
    and the op that made it (through views) does not keep it for its backward pass (a ReLU keeps its output) nor
    gives it as a view of what it computed (autograd would copy that back in backward)."""
    if tensor == INPUT or len(consumers[tensor]) != 1 or tensor in results:
        return False
    while tensor in alias:           # a view of another tensor: the same memory, so the same question
        tensor = alias[tensor]
        if tensor == INPUT or len(consumers[tensor]) != 1 or tensor in results:
            return False
    d = g.nodes[tensor]
    ins = [g.nodes[p]["shape"] for p in d["inputs"]]
    kinds, _ = OPS[d["op"]].saves(d["attrs"], ins, d["shape"])
    return "output" not in kinds and not OPS[d["op"]].view_out(d["attrs"], ins)


def plan(g: nx.DiGraph, heads: bool = True) -> Plan:
    """The plan of ``g`` (annotated with shapes); ``heads=False`` leaves the training-only heads out."""
    outputs = {k: v for k, v in g.graph["outputs"].items() if heads or not v["training_only"]}
    # a final softmax is the probability output: forward() returns the logits before it
    final = {k: v["node"] for k, v in outputs.items() if OPS[g.nodes[v["node"]]["op"]].probabilities}
    result_of = {k: g.nodes[final[k]]["inputs"][0] if k in final else v["node"]
                 for k, v in outputs.items()}
    skipped = set(final.values())
    order = [n for n in _order(g, heads) if n not in skipped]
    position = {n: i for i, n in enumerate(order)}
    consumers: dict[str, list[int]] = {n: [] for n in [INPUT, *order]}
    for n in order:
        for i in g.nodes[n]["inputs"]:
            consumers[i].append(position[n])
    results = set(result_of.values())
    inplace, alias = set(), {}
    for n in order:
        data = g.nodes[n]
        ins = data["inputs"]
        op = OPS[data["op"]]
        if op.alias:
            alias[n] = ins[0]            # a view, or (dropout in eval mode) the input itself
        elif op.inplace(data["attrs"]) and _may_overwrite(g, ins[0], consumers, results, alias) and \
                (op.join != "sum" or len(data["shape"]) == 3) and g.nodes[ins[0]]["shape"] == data["shape"]:
            # a sum in place over images only: what torchvision's CNN blocks do (out += identity); its
            # transformers add out of place, and overwriting a sequence a linear layer made has autograd keep
            # a copy of it (measured); never over an input the result is larger than (one that broadcasts)
            inplace.add(n)               # over its first input: its only reader, no output, not kept for backward
            alias[n] = ins[0]
    return Plan(order, result_of, consumers, frozenset(inplace), alias)
