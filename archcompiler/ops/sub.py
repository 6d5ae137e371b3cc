"""Element-wise difference of two inputs that broadcast (``op: sub``: PoolFormer's token mixer, pool(x) - x)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from ..spec.layers import ManyInputs
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
    two_layers,
)

KIND = "sub"


class Sub(ManyInputs):
    """Element-wise difference of two inputs that broadcast, the first minus the second (PoolFormer's and
    EfficientFormer's token mixer: pool(x) - x)."""

    op: Literal["sub"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers: the first minus the second; " + BROADCASTS)


_two, _from_onnx = two_layers(KIND, "takes the difference of two layers")


def _from_torch(s: Any) -> dict:
    need(s.arg.get("alpha", 1) == 1, f"alpha={s.arg.get('alpha')} (archc's {KIND} is a - b)")
    return _two(s)


OP = Op(
    layers=(LayerOp(Sub, lambda s: [("", KIND, {})]),),
    # autograd keeps nothing (the gradients are the output's, and its negation); measured
    # (tests/test_elementwise.py); one element operation per output element, timed like the calibrated add
    kinds=(OpDef(KIND, broadcast(KIND),
                 backward_workspace=lambda a, i, o: sum(math.prod(o) for s in i if tuple(s) != tuple(o)),
                 latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, lambda a, x, m, ip: " - ".join(x)), style=Style("circle", "#eeeeee")),),
    # a - b, torch.sub(a, b), a.sub(b), a -= b (alpha is a keyword: read from the call's keywords)
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:sub", "method:sub", "fn:isub")},
    from_onnx={"Sub": FromOnnx(_from_onnx)},
)
