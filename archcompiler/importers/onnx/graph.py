"""The ONNX reader's view of a graph: its nodes, the values they make and read, the names it gives layers, and
how a node is refused (its name, its op type, the closest op type archc reads)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BackendError, Location, error
from ...ops import FROM_ONNX, onnx_fields
from ...spec.limits import MAX_LAYERS
from ..flat import Item


@dataclass
class Node:
    """What a mapping sees: the node's attributes, its inputs' constant values (None for a tensor
    computed by the graph), the per-sample shapes of its tensor inputs and of its output."""

    name: str
    attrs: dict[str, Any]
    consts: list[Any]
    shapes: list[tuple[int, ...]]
    shape: tuple[int, ...]
    last: bool = False              # its tensor inputs are channels-last views (archc's shapes given: C x H x W)
    opset: int = 0                  # the file's version of ONNX's standard operators (0: not known)


_f32 = onnx_fields.f32
_PASS = {"Identity", "Dropout"}         # the value passes through in inference


def _standard(node: Any) -> bool:
    """The node is an operator of ONNX's standard domain (what archc reads; a custom domain's op of the
    same name may compute anything)."""
    return node.domain in ("", "ai.onnx")


def safe_text(text: Any, limit: int = 200) -> str:
    """Text from the file (a name, an op type) as a message may show it: on one line, its control and
    other unprintable characters escaped as repr would (an ANSI escape in a node's name is shown as
    ``\\x1b``, never sent to the terminal), cut after ``limit`` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _q(text: Any) -> str:
    """A name from the file, quoted (repr, which escapes what is not printable) and cut to 200 characters."""
    text = str(text)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _refuse(node: Any, why: str, hint: str | None = None) -> BackendError:
    close = difflib.get_close_matches(node.op_type, sorted(k for k in FROM_ONNX if ":" not in k), n=1, cutoff=0.0)
    name, op = safe_text(node.name), safe_text(node.op_type, 60)
    return BackendError([error(f"node {name or '(unnamed)'} ({op}): {why}", name or op,
                               hint=hint or f"the closest op type archc reads is {close[0] if close else 'Conv'}")])


def _fail(path: Path, message: str, hint: str | None = None) -> BackendError:
    """A refusal of the file as a whole, located at it."""
    return BackendError([error(message, "import", Location(safe_text(path, 1000)), hint=hint)])


@dataclass
class _Graph:
    """What the reader knows while it walks the nodes: the constants, every value's shape (with the
    batch), the layer each value is (``value_of``), the values that are a layer's channels-last view
    (N x H x W x C after a Transpose 0 2 3 1: ConvNeXt's and Swin's layout), each value's readers,
    the nodes a pattern has already taken, the layers and their weights."""

    consts: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    value_of: dict[str, str]
    readers: dict[str, list[Any]]
    last: set[str] = field(default_factory=set)
    skip: set[int] = field(default_factory=set)
    items: list[Item] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    taken: set[str] = field(default_factory=lambda: _Taken())
    pending: dict[str, tuple] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)     # value -> the node that computes it
    order: list[Any] = field(default_factory=list)            # the nodes in the file's (topological) order
    index: list[Item] = field(default_factory=list)           # the items layer() has indexed by name, in order
    by_name: dict[str, Item] = field(default_factory=dict)
    opset: int = 0                                            # the file's version of ONNX's standard operators

    def layer(self, name: str) -> Item | None:
        """The layer of that name (an index of ``items``, brought up to date here: one lookup per node, not a
        scan of every layer before it)."""
        for it in self.items[len(self.index):]:
            self.index.append(it)
            self.by_name[it.name] = it
        return self.by_name.get(name)

    def shape(self, value: str) -> tuple[int, ...]:
        """The per-sample shape archc gives the value: C x H x W for a channels-last view."""
        s = self.shapes.get(value, ())[1:]
        return (s[2], s[0], s[1]) if value in self.last and len(s) == 3 else s

    def emit(self, node: Any, out: str, fields: dict, sources: list[str], params: dict[str, tuple[str, Any]],
             in_shape: tuple[int, ...] = (), last: bool = False) -> Item:
        """One layer computing ``out`` from the layers ``sources``; ``params``: state_dict suffix (empty for
        a module that is a parameter itself) -> (initializer name, array); ``last``: ``out`` is a channels-last
        view. Its name is the module path the initializers' names give, where they give one."""
        import numpy as np

        if last:
            self.last.add(out)

        holder = None
        for init, arr in params.values():
            if getattr(arr, "size", 1) == 0:
                raise _refuse(node, f"its parameter {_q(init)} is empty (a dimension is 0)")
        if params:
            for suffix, (init, _) in params.items():
                base = init[:-len(suffix) - 1] if suffix and init.endswith("." + suffix) else None if suffix else init
                if base and _MODULE.fullmatch(base) and base not in self.taken:
                    holder = base
                    break
            holder = holder or _unique(node.op_type.lower(), self.taken)
            self.taken.add(holder)
            for suffix, (_, arr) in params.items():
                self.weights[f"{holder}.{suffix}" if suffix else holder] = np.ascontiguousarray(arr)
        layer = holder if holder is not None else _unique("%" + out, self.taken)
        scope = layer.rpartition(".")[0] if holder else None
        item = Item(layer, fields, sources, node.op_type, holder, scope, self.shape(out), in_shape, node.op_type)
        self.items.append(item)
        self.value_of[out] = layer
        if len(self.items) > MAX_LAYERS:
            raise BackendError([error(f"the model has more than {MAX_LAYERS} layers", "import")])
        return item

    def alias(self, out: str, value: str, last: bool | None = None) -> None:
        """``out`` is the same layer as ``value`` (a view: a layout change, an identity)."""
        self.value_of[out] = self.value_of[value]
        if last if last is not None else value in self.last:
            self.last.add(out)
        else:
            self.last.discard(out)


_MODULE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
# the ops that compute the same on a channels-last view (element by element, LayerNormalization over its
# last axis: the channels, a Concat whose mapping checks its axis against the layout); any other op reading
# such a view is refused
_ANY_LAYOUT = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish", "Gelu", "HardSigmoid", "Add", "Mul",
               "LayerNormalization", "Concat"}


def _only_reader(ctx: _Graph, value: str, op_type: str) -> Any:
    """The one node reading ``value``, where it is one of ``op_type``; else None."""
    r = ctx.readers.get(value, [])
    return r[0] if len(r) == 1 and r[0].op_type == op_type and _standard(r[0]) else None


def _const_of(ctx: _Graph, node: Any) -> tuple[list[str], list[tuple[int, Any]]]:
    """A node's tensor inputs (layers' outputs) and its constant inputs (position, value)."""
    tensors = [i for i in node.input if i and i not in ctx.consts]
    consts = [(k, ctx.consts[i]) for k, i in enumerate(node.input) if i and i in ctx.consts]
    return tensors, consts


def _sole_reader(ctx: _Graph, layer: str) -> Any:
    """The one node that reads the layer's output other than through a view of it (a layout Transpose, a
    Cast, an Identity that the walk has made the same layer); None where there are more, or none."""
    same = {v for v, name in ctx.value_of.items() if name == layer}
    others = {id(r): r for v in same for r in ctx.readers.get(v, []) if not set(r.output) & same}
    return next(iter(others.values())) if len(others) == 1 else None


def _slice(ctx: _Graph, node: Any) -> tuple[int, int, int, int] | None:
    """(axis, start, end, step) of a Slice along one axis with constant bounds, clipped to the input's size."""
    ins = [*node.input, "", "", ""][:5]
    starts, ends, axes, steps = (ctx.consts.get(i) if i else None for i in ins[1:5])
    full = ctx.shapes.get(ins[0], ())
    if node.op_type != "Slice" or starts is None or ends is None or starts.size != 1 or not full:
        return None
    axis = int(axes.reshape(-1)[0]) % len(full) if axes is not None else 0
    step = int(steps.reshape(-1)[0]) if steps is not None else 1
    size = full[axis]

    def clip(v: int) -> int:
        return max(0, min(size, v + size if v < 0 else v))
    return (axis, clip(int(starts.reshape(-1)[0])), clip(int(ends.reshape(-1)[0])), step) if step > 0 else None


def _scalar(ctx: _Graph, value: str) -> float | None:
    """The number a one-element constant holds (None for anything else)."""
    v = ctx.consts.get(value)
    return float(v.reshape(-1)[0]) if v is not None and getattr(v, "size", 0) == 1 and v.dtype.kind == "f" else None


def _other(node: Any, value: str) -> str | None:
    """A two-input node's input that is not ``value`` (None where both or neither are)."""
    ins = list(node.input)
    return ins[1 - ins.index(value)] if len(ins) == 2 and ins.count(value) == 1 else None


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_")


class _Taken(set):
    """The names taken, and for each base _unique was asked for, the number it got to: names are only
    added, so the numbers below it are still taken (20,000 layers named conv, conv_1, ... in linear time,
    not a minute of rescanning)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}


def _unique(base: str, taken: set[str]) -> str:
    k = getattr(taken, "counts", {}).get(base, 0)
    out = f"{base}_{k}" if k else base
    while out in taken:
        k += 1
        out = f"{base}_{k}"
    if isinstance(taken, _Taken):
        taken.counts[base] = k
    taken.add(out)
    return out
