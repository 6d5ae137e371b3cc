"""The matrix product of two layers' outputs (``op: matmul``): ``torch.matmul(a, b)`` of the batched tensors,
each sample's last two dims the matrices and the dims before them broadcast (attention's scores q @ k^T and
their product with v, written out)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from ..spec.layers import ManyInputs
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    Kernel,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    fmt,
    need,
)

KIND = "matmul"


class Matmul(ManyInputs):
    """The matrix product of two layers' outputs, `torch.matmul(a, b)`: each sample's last two dims are the
    matrices (a's M x K times b's K x N), the dims before them broadcast (each equal, or 1 in one of them); both
    inputs have the same number of dims, at least two per sample (a sequence, S x D, is one matrix)."""

    op: Literal["matmul"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers: the first (M x K) times the second (K x N)")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 2:
        raise ShapeError(f"matmul takes two inputs, got {len(shapes)}")
    x, y = shapes
    if len(x) < 2 or len(y) < 2 or len(x) != len(y):
        raise ShapeError(f"matmul needs two inputs of the same number of dims, at least two per sample (matrices, "
                         f"or stacks of them), got {fmt(x)} and {fmt(y)}")
    if x[-1] != y[-2]:
        raise ShapeError(f"matmul needs the first input's last dim to equal the second's next to last (M x K times "
                         f"K x N), got {fmt(x)} and {fmt(y)}: {x[-1]} and {y[-2]}")
    if any(p != q and 1 not in (p, q) for p, q in zip(x[:-2], y[:-2])):
        raise ShapeError(f"matmul needs the dims before the matrices to broadcast (each equal, or 1 in one of "
                         f"them), got {fmt(x)} and {fmt(y)}")
    return (*(max(p, q) for p, q in zip(x[:-2], y[:-2])), x[-2], y[-1])


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """One multiply-add per output element and step of the inner dim (torch's FlopCounterMode: 2 M N K each)."""
    return math.prod(o) * i[0][-1]


def _kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    """The calibrated ``matmul`` (as a Linear over tokens), looked up by K, N and M."""
    return Kernel("matmul", (i[0][-1], o[-1], o[-2]), _macs(a, i, o))


def _spread(i: list[Shape], o: Shape) -> list[int]:
    """Each input's elements at the broadcast size (torch.matmul expands a broadcast input to it and copies)."""
    return [math.prod((*o[:-2], *s[-2:])) for s in i]


def _broadcast(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The elements a broadcast input's copy at the broadcast size adds to it (0 where no input is broadcast)."""
    return sum(n - math.prod(s) for n, s in zip(_spread(i, o), i))


def _copies(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The copies of the broadcast inputs at the broadcast size, made while the product runs."""
    return sum(n for n, s in zip(_spread(i, o), i) if n != math.prod(s))


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """Autograd keeps both inputs (each the other's gradient factor), a broadcast one as its copy at the
    broadcast size (measured: tests/test_matmul.py)."""
    return ("input",), _broadcast(a, i, o)


def _from_torch(s: Any) -> dict:
    need(len(s.shapes) == 2, "a product with a constant or a parameter (archc's matmul multiplies two layers' "
                             "outputs; a layer's own weight is a linear)")
    try:
        _shape({}, s.shapes)
    except ShapeError as exc:
        need(False, str(exc))
    need(s.arg.get("out") is None, "a product with an out tensor")
    return {"op": KIND}


def _from_onnx(n: Any) -> dict:
    need(all(c is None for c in n.consts) and len(n.consts) == 2, "a MatMul with a constant")
    need(not n.last, "a product of a channels-last view")
    try:
        _shape({}, n.shapes)
    except ShapeError as exc:
        need(False, str(exc))
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(Matmul, lambda s: [("", KIND, {})]),),
    # no element operations beyond the MACs; a broadcast input is copied at the broadcast size (its gradient too,
    # then summed down to its size): measured (tests/test_matmul.py)
    kinds=(OpDef(KIND, _shape, macs=_macs, elementwise=lambda a, i, o: 0, saves=_saves,
                 workspace=_copies, backward_workspace=_broadcast, latency=Latency(("matmul",), _kernel),
                 torch=TorchCode(None, lambda a, x, m, ip: f"torch.matmul({x[0]}, {x[1]})"),
                 style=Style("box", "#d9f0d3", lambda a: "a @ b")),),
    # torch.matmul(a, b), a @ b (operator.matmul), a.matmul(b), torch.bmm, a.bmm(b)
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:matmul", "method:matmul", "fn:bmm", "method:bmm")},
    # a MatMul by a constant matrix is a linear (its entry); of two layers' outputs, this
    from_onnx={"else:MatMul": FromOnnx(_from_onnx)},
)
