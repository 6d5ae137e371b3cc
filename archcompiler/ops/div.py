"""Element-wise quotient of two inputs that broadcast (``op: div``: a map divided by another layer's output)."""

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

KIND = "div"


class Div(ManyInputs):
    """Element-wise quotient of two inputs that broadcast, the first divided by the second (a map divided by
    a per-channel or per-position norm another layer computes)."""

    op: Literal["div"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers: the first divided by the second; " + BROADCASTS)


_two, _from_onnx = two_layers(KIND, "divides one layer by another")


def _from_torch(s: Any) -> dict:
    need(s.arg.get("rounding_mode") is None, f"rounding_mode={s.arg.get('rounding_mode')!r} (archc's {KIND} is "
                                              "true division, a / b)")
    return _two(s)


OP = Op(
    layers=(LayerOp(Div, lambda s: [("", KIND, {})]),),
    # a / b: autograd keeps both inputs (grad / b, and -grad * a / b^2); measured (tests/test_elementwise.py);
    # one element operation per output element, timed like the calibrated add
    kinds=(OpDef(KIND, broadcast(KIND), saves=lambda a, i, o: (("input",), 0),
                 backward_workspace=lambda a, i, o: 4 * math.prod(o) - sum(math.prod(s) for s in i),
                 latency=per_map(("add",), lambda a: "add", elements),
                 torch=TorchCode(None, lambda a, x, m, ip: " / ".join(x)), style=Style("circle", "#eeeeee")),),
    # a / b, a /= b, torch.div(a, b), a.div(b) (rounding_mode is a keyword: read from the call's keywords)
    from_torch={key: FromTorch(KIND, _from_torch) for key in ("fn:truediv", "fn:itruediv", "fn:div", "method:div")},
    from_onnx={"Div": FromOnnx(_from_onnx)},
)
