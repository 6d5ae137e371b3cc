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
    broadcast,
    elements,
    fmt,
    need,
    per_map,
)
from .activation import Activation, lower_act

KIND = "add"


class Add(ManyInputs):
    """Element-wise sum (a residual connection), optionally followed by an activation. Its inputs have one
    shape, or two inputs broadcast as `mul`'s do (a map plus a C x 1 x 1 or 1 x H x W one); it runs in place
    over its first input when that input has the sum's shape and nothing else reads it."""

    op: Literal["add"]
    act: Activation = "none"


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(set(shapes)) == 1:
        return shapes[0]
    if len(shapes) == 2:
        return broadcast(KIND)(a, shapes)
    raise ShapeError("add needs inputs of one shape (two inputs may broadcast), got " + ", ".join(fmt(s) for s in shapes))


def _fits(shapes: list[Shape]) -> bool:
    try:
        _shape({}, shapes)
    except ShapeError:
        return False
    return True


def _from_torch(s: Any) -> dict:
    need(len(s.shapes) >= 2, "an operation with a constant (archc's add joins two layers)")
    need(_fits(s.shapes), "an add of tensors that do not broadcast (archc's add sums inputs of one shape, or two that "
                          "broadcast: each dimension equal or 1 in one of them)")
    return {"op": "add"}


def _from_onnx(n: Any) -> dict:
    _onnx.no_constants(n, "add")
    need(len(n.consts) >= 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's add joins two or more)")
    need(_fits(n.shapes), "an add of shapes that do not broadcast")
    return {"op": "add"}


def _broadcast_inputs(i: list[Shape], o: Shape) -> int:
    """The elements of the output-sized gradient each broadcast input's backward makes before summing it down."""
    return sum(math.prod(o) for s in i if tuple(s) != tuple(o))


def _call(a: Attrs, x: list[str], m: str, inplace: bool) -> str:
    return x[0] + "".join(f".add_({y})" for y in x[1:]) if inplace else " + ".join(x)


OP = Op(
    layers=(LayerOp(Add, lambda s: [("", KIND, {}), *lower_act(s.act)]),),
    # in place over its first input, as torchvision's blocks do (out += identity): no new map
    # inputs of one shape: the gradient passes on as views; one that broadcasts: like sub's, each input's gradient
    # its own, the broadcast one made at the output's size and summed down (measured, tests/test_elementwise.py)
    kinds=(OpDef(KIND, _shape, elementwise=lambda a, i, o: (len(i) - 1) * math.prod(o), join="sum",
                 inplace=lambda a: True, grad_passthrough=lambda a, i, o: not _broadcast_inputs(i, o),
                 backward_workspace=lambda a, i, o: _broadcast_inputs(i, o), latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, _call), style=Style("circle", "#eeeeee")),),
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:add", "fn:iadd", "method:add",
                                                              "method:add_")},   # archc's own sums: x.add_(y)
    from_onnx={"Add": FromOnnx(_from_onnx)},
)
