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
from typing import Any

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

    last = _last_use(g, order, run.result_of, buffer)
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


def _last_use(g: nx.DiGraph, order: list[str], result_of: dict[str, str], buffer: Any) -> dict[str, int]:
    """Each buffer's last step in ``order`` (a step past the end for the input, which the caller holds,
    and for the tensors returned)."""
    end = len(order)
    last: dict[str, int] = {INPUT: end}
    for i, n in enumerate(order):
        last[buffer(n)] = max(last.get(buffer(n), i), i)
        for src in g.nodes[n]["inputs"]:
            last[buffer(src)] = max(last.get(buffer(src), i), i)
    for name in result_of.values():
        last[buffer(name)] = end
    return last


def training_memory(g: nx.DiGraph, batch: int = 1, optimizer: str = "sgd", bytes_per_element: int = 4) -> dict:
    """Memory of one training step (forward with the training-only heads, backward, optimizer step),
    following the plan the generated code runs: the parameters, their gradients, the optimizer's state,
    and the activations autograd saves for the backward pass (per the op table's ``saves``), freed as
    the backward pass goes; the peak is the most that is live at once. Returns ``params``,
    ``gradients``, ``optimizer_state``, ``saved_activations`` (at the end of the forward pass),
    ``rows`` (saved bytes per spec row) and ``peak`` (bytes)."""
    step = _TrainingStep(g, batch, bytes_per_element)
    params = sum(d["params"].total for d in g.nodes.values()) * bytes_per_element
    state = OPTIMIZER_STATE[optimizer] * params
    step.record_saves()
    fixed = params + state
    saved_total = step.forward(fixed)
    param_grads = step.backward(fixed)
    tensors = [bytes_per_element * t for _, d in sorted(g.nodes(data=True), key=lambda nd: nd[1]["order"])
               for t in (d["params"].weights, d["params"].biases) if t]
    peak = max(step.peak, fixed + param_grads + step.size[INPUT] + _step_extra(optimizer, tensors))
    return {"params": params, "gradients": params, "optimizer_state": state, "saved_activations": saved_total,
            "rows": step.rows, "peak": int(peak), "optimizer": optimizer, "batch": batch}


class _TrainingStep:
    """The activations of one training step, walked forward then backward: which tensors are
    allocated, which the backward pass keeps (and who keeps them), and the bytes live at each step.
    ``peak`` is the most live at once on top of the fixed bytes (parameters, optimizer state)."""

    def __init__(self, g: nx.DiGraph, batch: int, bytes_per_element: int) -> None:
        self.g, self.batch, self.bytes = g, batch, bytes_per_element
        self.run = plan(g, heads=True)
        self.order = self.run.order
        for n in g.nodes:
            g.nodes[n]["activation_bytes"] = batch * bytes_per_element * math.prod(g.nodes[n]["shape"])
        self.alias = _training_alias(g, self.run.alias)
        self.size = {n: g.nodes[n]["activation_bytes"] for n in g.nodes}
        self.saved_by: dict[str, set[str]] = {}     # tensor -> the nodes that keep it for backward
        self.keeps: dict[str, list[str]] = {}       # node -> the tensors it keeps
        self.extra: dict[str, int] = {}             # node -> the bytes it saves beyond whole tensors
        self.rows: dict[str, int] = {}              # spec row -> the bytes it saves
        self.allocated: set[str] = {INPUT}
        self.live = 0
        self.peak = 0

    def buffer(self, n: str) -> str:
        """The tensor whose memory node ``n``'s output is (itself, unless it aliases its input)."""
        while n in self.alias:
            n = self.alias[n]
        return n

    def record_saves(self) -> None:
        """Who keeps which tensor for the backward pass, and the bytes each node saves besides."""
        g = self.g
        for n in self.order:
            d = g.nodes[n]
            ins = [g.nodes[p]["shape"] for p in d["inputs"]]
            kinds, elements = OPS[d["op"]].saves(d["attrs"], ins, d["shape"])
            if n in self.run.inplace and "input" in kinds:
                # computed over its input, but its backward needs that input: autograd keeps a copy
                # of it from before the op overwrote it (silu_, hardswish_)
                kinds = tuple(k for k in kinds if k != "input")
                elements += sum(math.prod(s) for s in ins)
            self.extra[n] = self.bytes * (self.batch * elements + OPS[d["op"]].saves_once(d["attrs"], ins, d["shape"]))
            keep = (([self.buffer(p) for p in d["inputs"]] if "input" in kinds else [])
                    + ([self.buffer(n)] if "output" in kinds else []))
            self.keeps[n] = keep
            for b in keep:
                self.saved_by.setdefault(b, set()).add(n)
            self.rows[d["row"]] = self.rows.get(d["row"], 0) + self.extra[n]

    def forward(self, fixed: float) -> int:
        """Run the forward pass: allocate each output, free what no later op reads and backward does
        not keep. Returns the bytes saved for backward at its end (also added to ``rows``)."""
        last = _last_use(self.g, self.order, self.run.result_of, self.buffer)
        size, allocated = self.size, self.allocated
        self.live = size[INPUT]
        self.peak = fixed + self.live
        for i, n in enumerate(self.order):
            if self.buffer(n) == n:
                self.live += size[n]
                allocated.add(n)
            self.live += self.extra[n]
            self.peak = max(self.peak, fixed + self.live)
            for b in [b for b in allocated if last.get(b, -1) == i and b not in self.saved_by and b != INPUT]:
                self.live -= size[b]
                allocated.discard(b)
        saved_total = sum(size[b] for b in allocated if b in self.saved_by) + sum(self.extra.values())
        for b in allocated:
            if b in self.saved_by:
                row = self.g.nodes[b]["row"] if b != INPUT else INPUT
                self.rows[row] = self.rows.get(row, 0) + size[b]
        return saved_total

    def backward(self, fixed: float) -> int:
        """Run the backward pass in reverse order: gradients of activations and of parameters
        appear, saved tensors go when their last keeper is done. Returns the parameters' gradient bytes."""
        g, size = self.g, self.size
        grads: dict[str, int] = {self.run.result_of[k]: size[self.run.result_of[k]] for k in self.run.result_of}
        self.live += sum(grads.values())
        param_grads = 0
        for n in reversed(self.order):
            d = g.nodes[n]
            ins = [g.nodes[p]["shape"] for p in d["inputs"]]
            if OPS[d["op"]].passes_gradient(d["attrs"], ins, d["shape"]):     # the gradient passes on as a view
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
                        self.live += size[p]
                grow = d["params"].total * self.bytes
                param_grads += grow
                self.live += grow
                transient = self.batch * self.bytes * OPS[d["op"]].backward_workspace(d["attrs"], ins, d["shape"])
                self.peak = max(self.peak, fixed + self.live + transient)
                self.live -= grads.pop(n, 0)
            self.live -= self.extra[n]
            self._release(n)
        return param_grads

    def _release(self, n: str) -> None:
        """Node ``n``'s backward has run: free each tensor it kept that no other node still keeps."""
        for b in self.keeps.get(n, []):
            keepers = self.saved_by.get(b)
            if keepers is None:
                continue
            keepers.discard(n)
            if not keepers:
                del self.saved_by[b]
                if b in self.allocated:
                    self.live -= self.size[b]
                    self.allocated.discard(b)
