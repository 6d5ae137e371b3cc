"""Element-wise difference of two inputs that broadcast (``op: sub``: PoolFormer's token mixer, pool(x) - x)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from ..spec.layers import ManyInputs
from . import _onnx
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    elements,
    fmt,
    need,
    per_map,
)

KIND = "sub"


class Sub(ManyInputs):
    """Element-wise difference of two inputs that broadcast, the first minus the second (PoolFormer's and
    EfficientFormer's token mixer: pool(x) - x)."""

    op: Literal["sub"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers: the first minus the second")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """Two inputs that broadcast as PyTorch broadcasts them: of one rank, and each dimension equal or 1 in one
    of them."""
    if len(shapes) != 2:
        raise ShapeError(f"{KIND} takes two inputs, got {len(shapes)}")
    a_, b = shapes
    if len(a_) != len(b) or any(x != y and 1 not in (x, y) for x, y in zip(a_, b)):
        raise ShapeError(f"{KIND} needs inputs that broadcast (each dimension equal, or 1 in one of them), "
                         f"got {fmt(a_)} and {fmt(b)}")
    return tuple(max(x, y) for x, y in zip(a_, b))


def _from_torch(s: Any) -> dict:
    need(len(s.shapes) >= 2, f"an operation with a constant (archc's {KIND} takes the difference of two layers)")
    need(len(s.shapes) == 2, f"a {KIND} of more than two tensors")
    need(s.arg.get("alpha", 1) == 1, f"alpha={s.arg.get('alpha')} (archc's {KIND} is a - b)")
    return {"op": KIND}


def _from_onnx(n: Any) -> dict:
    _onnx.no_constants(n, KIND)
    need(len(n.consts) == 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's {KIND} takes two)")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(Sub, lambda s: [("", KIND, {})]),),
    # autograd keeps nothing (the gradients are the output's, and its negation); measured
    # (tests/test_elementwise.py); one element operation per output element, timed like the calibrated add
    kinds=(OpDef(KIND, _shape,
                 backward_workspace=lambda a, i, o: sum(math.prod(o) for s in i if tuple(s) != tuple(o)),
                 latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, lambda a, x, m, ip: " - ".join(x)), style=Style("circle", "#eeeeee")),),
    # a - b, torch.sub(a, b), a.sub(b), a -= b (alpha is a keyword: read from the call's keywords)
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:sub", "method:sub", "fn:isub")},
    from_onnx={"Sub": FromOnnx(_from_onnx)},
)
