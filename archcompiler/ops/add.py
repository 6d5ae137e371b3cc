"""Element-wise sum, a residual connection (``op: add``), optionally followed by an activation."""

from __future__ import annotations

import math
from typing import Any, Literal

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
from .activation import Activation, lower_act

KIND = "add"


class Add(ManyInputs):
    """Element-wise sum (a residual connection), optionally followed by an activation. Its inputs have one shape:
    it does not broadcast (`mul`, `sub` and `div` do)."""

    op: Literal["add"]
    act: Activation = "none"


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(set(shapes)) != 1:
        raise ShapeError("add needs inputs of one shape, got " + ", ".join(fmt(s) for s in shapes))
    return shapes[0]


def _from_torch(s: Any) -> dict:
    need(len(s.shapes) >= 2, "an operation with a constant (archc's add joins two layers)")
    need(all(sh == s.shape for sh in s.shapes), "an add of tensors of different shapes (archc's add sums inputs of "
                                                "one shape; it does not broadcast)")
    return {"op": "add"}


def _from_onnx(n: Any) -> dict:
    _onnx.no_constants(n, "add")
    need(len(n.consts) >= 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's add joins two or more)")
    need(all(s == n.shape for s in n.shapes), "a add of different shapes")
    return {"op": "add"}


def _call(a: Attrs, x: list[str], m: str, inplace: bool) -> str:
    return x[0] + "".join(f".add_({y})" for y in x[1:]) if inplace else " + ".join(x)


OP = Op(
    layers=(LayerOp(Add, lambda s: [("", KIND, {}), *lower_act(s.act)]),),
    # in place over its first input, as torchvision's blocks do (out += identity): no new map
    kinds=(OpDef(KIND, _shape, elementwise=lambda a, i, o: (len(i) - 1) * math.prod(o), join="sum",
                 inplace=lambda a: True, grad_passthrough=True, latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, _call), style=Style("circle", "#eeeeee")),),
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:add", "fn:iadd", "method:add",
                                                              "method:add_")},   # archc's own sums: x.add_(y)
    from_onnx={"Add": FromOnnx(_from_onnx)},
)
