"""Element-wise product of two inputs that broadcast (``op: mul``: squeeze-and-excitation's gate)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from ..spec.layers import ManyInputs
from . import _onnx
from ._base import (
    BROADCASTS,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Style,
    TorchCode,
    broadcast,
    elements,
    need,
    per_map,
)

KIND = "mul"


class Mul(ManyInputs):
    """Element-wise product of two inputs that broadcast (squeeze-and-excitation: a feature map
    times a C x 1 x 1 gate)."""

    op: Literal["mul"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers to multiply; " + BROADCASTS)


def _from_torch(s: Any) -> dict:
    need(len(s.shapes) >= 2, "an operation with a constant (archc's mul joins two layers)")
    need(len(s.shapes) == 2, "a mul of more than two tensors")
    return {"op": "mul"}


def _from_onnx(n: Any) -> dict:
    _onnx.no_constants(n, "mul")
    need(len(n.consts) == 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's mul joins two)")
    return {"op": "mul"}


OP = Op(
    layers=(LayerOp(Mul, lambda s: [("", KIND, {})]),),
    # broadcast product: autograd keeps both inputs, each the other's gradient factor; a broadcast input's
    # gradient is computed at the output's size, then summed down; timed like the calibrated add
    kinds=(OpDef(KIND, broadcast(KIND), saves=lambda a, i, o: (("input",), 0),
                 backward_workspace=lambda a, i, o: sum(math.prod(o) for s in i if tuple(s) != tuple(o)),
                 latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, lambda a, x, m, ip: " * ".join(x)), style=Style("circle", "#eeeeee")),),
    from_torch={"fn:mul": FromTorch(KIND, _from_torch), "fn:imul": FromTorch(KIND, _from_torch)},
    from_onnx={"Mul": FromOnnx(_from_onnx)},
)
