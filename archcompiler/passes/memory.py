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


def _training_alias(g: nx.DiGraph, alias: dict[str, str]) -> dict[str, str]:
    """The plan's aliases in training mode: an op that is its input in evaluation mode only
    (dropout) makes a new tensor in training."""
    return {n: src for n, src in alias.items() if OPS[g.nodes[n]["op"]].alias != "eval"}


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
        alias = _training_alias(g, alias)

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
        op = OPS[data["op"]]
        work = bytes_per_element * (op.batch_workspace(data["attrs"], ins, data["shape"], batch)
                                    if op.batch_workspace is not None
                                    else batch * op.workspace(data["attrs"], ins, data["shape"]))
        peak = max(peak, live + work if runs else live)
        for done in freeing.get(i, []):
            if training or not g.nodes[done]["training_only"]:
                live -= g.nodes[done]["activation_bytes"]
    return peak


# What an optimizer keeps per parameter, in parameter sizes: SGD's momentum, Adam's two moments.
OPTIMIZER_STATE = {"sgd": 1.0, "adam": 2.0, "adamw": 2.0}


def _step_extra(optimizer: str, tensors: list[int]) -> int:
    """Bytes the optimizer's step allocates on top of its state (measured on torch's CPU code, which
    updates one parameter tensor at a time): SGD with momentum works in place; Adam builds sqrt(v)
    and its quotient for each tensor while the previous tensor's quotient is still referenced."""
    if optimizer == "sgd" or not tensors:
        return 0
    pairs = [tensors[i] + 2 * tensors[i + 1] for i in range(len(tensors) - 1)]
    return max([2 * tensors[0], *pairs])


def training_memory(g: nx.DiGraph, batch: int = 1, optimizer: str = "sgd", bytes_per_element: int = 4) -> dict:
    """Memory of one training step (forward with the training-only heads, backward, optimizer step),
    following the plan the generated code runs: the parameters, their gradients, the optimizer's state,
    and the activations autograd saves for the backward pass (per the op table's ``saves``), freed as
    the backward pass goes; the peak is the most that is live at once. Returns ``params``,
    ``gradients``, ``optimizer_state``, ``saved_activations`` (at the end of the forward pass),
    ``rows`` (saved bytes per spec row) and ``peak`` (bytes)."""
    run = plan(g, heads=True)
    order = run.order
    for n in g.nodes:
        g.nodes[n]["activation_bytes"] = batch * bytes_per_element * math.prod(g.nodes[n]["shape"])
    alias = _training_alias(g, run.alias)

    def buffer(n: str) -> str:
        while n in alias:
            n = alias[n]
        return n

    size = {n: g.nodes[n]["activation_bytes"] for n in g.nodes}
    params = sum(d["params"].total for d in g.nodes.values()) * bytes_per_element
    state = OPTIMIZER_STATE[optimizer] * params
    # forward: who keeps which tensor for the backward pass
    saved_by: dict[str, set[str]] = {}          # tensor -> the nodes that keep it for backward
    keeps: dict[str, list[str]] = {}            # node -> the tensors it keeps
    extra: dict[str, int] = {}
    rows: dict[str, int] = {}
    for n in order:
        d = g.nodes[n]
        ins = [g.nodes[p]["shape"] for p in d["inputs"]]
        kinds, elements = OPS[d["op"]].saves(d["attrs"], ins, d["shape"])
        if n in run.inplace and "input" in kinds:
            # computed over its input, but its backward needs that input: autograd keeps a copy
            # of it from before the op overwrote it (silu_, hardswish_)
            kinds = tuple(k for k in kinds if k != "input")
            elements += sum(math.prod(s) for s in ins)
        extra[n] = bytes_per_element * (batch * elements + OPS[d["op"]].saves_once(d["attrs"], ins, d["shape"]))
        keep = ([buffer(p) for p in d["inputs"]] if "input" in kinds else []) + ([buffer(n)] if "output" in kinds else [])
        keeps[n] = keep
        for b in keep:
            saved_by.setdefault(b, set()).add(n)
        rows[d["row"]] = rows.get(d["row"], 0) + extra[n]
    last = {INPUT: len(order)}
    for i, n in enumerate(order):
        last[buffer(n)] = max(last.get(buffer(n), i), i)
        for p in g.nodes[n]["inputs"]:
            last[buffer(p)] = max(last.get(buffer(p), i), i)
    for name in run.result_of.values():
        last[buffer(name)] = len(order)
    fixed = params + state
    live = size[INPUT]
    peak = fixed + live
    allocated: set[str] = {INPUT}
    for i, n in enumerate(order):
        if buffer(n) == n:
            live += size[n]
            allocated.add(n)
        live += extra[n]
        peak = max(peak, fixed + live)
        for b in [b for b in allocated if last.get(b, -1) == i and b not in saved_by and b != INPUT]:
            live -= size[b]
            allocated.discard(b)
    saved_total = sum(size[b] for b in allocated if b in saved_by) + sum(extra.values())
    for b in allocated:
        if b in saved_by:
            rows[g.nodes[b]["row"] if b != INPUT else INPUT] = rows.get(g.nodes[b]["row"] if b != INPUT else INPUT, 0) \
                + size[b]
    # backward, in reverse: gradients of activations and of parameters appear, saved tensors go
    grads: dict[str, int] = {run.result_of[k]: size[run.result_of[k]] for k in run.result_of}
    live += sum(grads.values())
    param_grads = 0
    for n in reversed(order):
        d = g.nodes[n]
        if OPS[d["op"]].grad_passthrough:       # the gradient passes through as a view
            for p in d["inputs"]:
                if p != INPUT and p not in grads:
                    grads[p] = 0
            owned = grads.pop(n, 0)
            if d["inputs"] and d["inputs"][0] != INPUT:
                grads[d["inputs"][0]] = grads.get(d["inputs"][0], 0) + owned
        else:
            for p in d["inputs"]:
                if p != INPUT and p not in grads:
                    grads[p] = size[p]
                    live += size[p]
            grow = d["params"].total * bytes_per_element
            param_grads += grow
            live += grow
            ins = [g.nodes[p]["shape"] for p in d["inputs"]]
            transient = batch * bytes_per_element * OPS[d["op"]].backward_workspace(d["attrs"], ins, d["shape"])
            peak = max(peak, fixed + live + transient)
            live -= grads.pop(n, 0)
        live -= extra[n]
        for b in keeps.get(n, []):
            keepers = saved_by.get(b)
            if keepers is None:
                continue
            keepers.discard(n)
            if not keepers:
                del saved_by[b]
                if b in allocated:
                    live -= size[b]
                    allocated.discard(b)
    tensors = [bytes_per_element * t for _, d in sorted(g.nodes(data=True), key=lambda nd: nd[1]["order"])
               for t in (d["params"].weights, d["params"].biases) if t]
    step = _step_extra(optimizer, tensors)
    peak = max(peak, fixed + param_grads + size[INPUT] + step)
    return {"params": params, "gradients": params, "optimizer_state": state, "saved_activations": saved_total,
            "rows": rows, "peak": int(peak), "optimizer": optimizer, "batch": batch}
