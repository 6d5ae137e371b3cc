"""Element-wise quotient of two inputs that broadcast (``op: div``: a map divided by another layer's output)."""

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

KIND = "div"


class Div(ManyInputs):
    """Element-wise quotient of two inputs that broadcast, the first divided by the second (a map divided by
    a per-channel or per-position norm another layer computes)."""

    op: Literal["div"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers: the first divided by the second")


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
    need(len(s.shapes) >= 2, f"an operation with a constant (archc's {KIND} divides one layer by another)")
    need(len(s.shapes) == 2, f"a {KIND} of more than two tensors")
    need(s.arg.get("rounding_mode") is None, f"rounding_mode={s.arg.get('rounding_mode')!r} (archc's {KIND} is "
                                              "true division, a / b)")
    return {"op": KIND}


def _from_onnx(n: Any) -> dict:
    _onnx.no_constants(n, KIND)
    need(len(n.consts) == 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's {KIND} takes two)")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(Div, lambda s: [("", KIND, {})]),),
    # a / b: autograd keeps both inputs (grad / b, and -grad * a / b^2); measured (tests/test_elementwise.py);
    # one element operation per output element, timed like the calibrated add
    kinds=(OpDef(KIND, _shape, saves=lambda a, i, o: (("input",), 0),
                 backward_workspace=lambda a, i, o: 4 * math.prod(o) - sum(math.prod(s) for s in i),
                 latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, lambda a, x, m, ip: " / ".join(x)), style=Style("circle", "#eeeeee")),),
    # a / b, a /= b, torch.div(a, b), a.div(b) (rounding_mode is a keyword: read from the call's keywords)
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:truediv", "fn:itruediv", "fn:div", "method:div")},
    from_onnx={"Div": FromOnnx(_from_onnx)},
)
