"""Flatten all but the batch dimension (``op: flatten``; a linear's implicit flatten)."""

from __future__ import annotations

import math
from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import (
    A_STATEMENT,
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
    Window,
    need,
)

KIND = "flatten"


class Flatten(LayerBase):
    """Flatten everything but the batch: C x H x W becomes C * H * W features (torch.flatten(x, 1))."""

    op: Literal["flatten"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"flatten takes one input, got {len(shapes)}")
    return (math.prod(shapes[0]),)


def _window(a: Attrs, i: list[Shape]) -> Window | None:
    if len(i[0]) != 3:
        return None
    _, h, w = i[0]
    return Window((h, w), (1, 1), (0, 0))


def _from_torch(s: Any) -> dict:
    start = getattr(s.module, "start_dim", s.arg.get("start_dim", 0 if s.module is None else 1))
    end = getattr(s.module, "end_dim", s.arg.get("end_dim", -1))
    need(start == 1 and end == -1, f"flatten({start}, {end}) (archc flattens all but the batch: flatten(x, 1))")
    return {"op": "flatten"}


def _from_onnx(n: Any) -> dict:
    need(n.attrs.get("axis", 1) == 1, "a flatten at another axis than 1")
    return {"op": "flatten"}


def _reshape(n: Any) -> dict:
    target = n.consts[1]
    need(target is not None and len(target) == 2 and len(n.shape) == 1, "a reshape other than a flatten")
    return {"op": "flatten"}


DIMS = ("start_dim", "end_dim")
OP = Op(
    layers=(LayerOp(Flatten, lambda s: [("", KIND, {})]),),
    kinds=(OpDef(
        KIND, _shape, window=_window, elementwise=lambda a, i, o: 0, alias="view",
        passthrough=lambda a, i: len(i[0]) == 1, grad_passthrough=True, latency=A_STATEMENT,
        torch=TorchCode(None, lambda a, x, m, ip: f"torch.flatten({x[0]}, 1)"), style=Style("box", "#f5f5f5")),),
    from_torch={"Flatten": FromTorch(KIND, _from_torch), "fn:flatten": FromTorch(KIND, _from_torch, DIMS),
                "method:flatten": FromTorch(KIND, _from_torch, DIMS)},
    from_onnx={"Flatten": FromOnnx(_from_onnx), "Reshape": FromOnnx(_reshape)},
)
