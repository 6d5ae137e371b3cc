"""Softmax (``op: softmax``): over the channels, as a network's last op its probability output; or over another
dim inside the network (``dim: -1``: each token's scores over a sequence's last axis)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..spec.layers import LayerBase, not_bool
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
    Unmappable,
    need,
    same,
)
from .reduce import MAX_RANK, positive

KIND = "softmax"
OVER = "softmax_over"       # a softmax over another dim than the channels: never the probability output


class Softmax(LayerBase):
    """Softmax over the channels (dim 1) or over another dim. A final softmax over dim 1 (of a flat vector or a C
    x H x W map) is the model's probability output: the torch backend applies it in `predict_proba` and trains
    on the logits before it; a softmax over another dim is part of the network (its output is what it returns)."""

    op: Literal["softmax"]
    dim: Annotated[int, BeforeValidator(not_bool), Field(ge=-MAX_RANK, le=MAX_RANK)] = Field(
        1, description="the dim the probabilities sum to 1 over, numbered as torch numbers the batched tensor: 1 "
                       "the channels (a flat vector's features), 2 and 3 an image's height and width, 2 a "
                       "sequence's features; negative from the last; the batch, dim 0, never. Only dim 1 is "
                       "the model's probability output (a final -1 is a softmax the forward applies)")


def _lower(s: Softmax) -> list:
    return [("", KIND, {})] if s.dim == 1 else [("", OVER, {"dim": s.dim})]


def _over_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"softmax takes one input, got {len(shapes)}")
    positive(a["dim"], shapes[0], "a softmax")
    return shapes[0]


def _fields(dim: Any, shape: Shape) -> dict:
    """The layer of a softmax over torch's ``dim`` of a batched tensor whose sample has ``shape``: dim 1 (a flat
    vector's -1 too) the channels'."""
    need(dim is not None, "a softmax without a dim (torch's implicit choice is deprecated; archc needs it named)")
    try:
        (d,) = positive(dim, shape, "a softmax")
    except ShapeError as exc:
        raise Unmappable(str(exc)) from None
    return {"op": "softmax"} if d == 1 else {"op": "softmax", "dim": int(dim)}


def _from_torch(s: Any) -> dict:
    dim = getattr(s.module, "dim", None) if s.module is not None else s.arg.get("dim")
    need(not any(s.arg.get(v) for v in ("channels_last", "batched", "partition", "windows", "patches")),
         "a softmax of a view that archc reads in another layout (after x.permute or a cut into windows)")
    need(s.arg.get("dtype") is None, "a softmax with a dtype")
    return _fields(dim, s.shapes[0])


def _from_onnx(n: Any) -> dict:
    need(not n.last, "a softmax of a channels-last view")
    axis = n.attrs.get("axis", -1 if n.opset >= 13 else 1)
    # before opset 13 a Softmax flattens the dims from its axis on and normalises over all of them: one dim only
    # where the axis is the last
    need(n.opset >= 13 or axis % (len(n.shapes[0]) + 1) == len(n.shapes[0]),
         f"a Softmax of opset {n.opset or 'unknown'} over the dims from {axis} on (before opset 13 it normalises "
         "over all the dims from its axis; archc's is over one)")
    return _fields(axis, n.shapes[0])


def _saves_output(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """Autograd keeps softmax's output (its backward is y * (g - sum(g * y))); measured (tests/test_softmax_dim.py)."""
    return ("output",), 0


def _over_call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    return f"F.softmax({x[0]}, dim={a['dim']})"


OP = Op(
    layers=(LayerOp(Softmax, _lower, main=KIND),),
    kinds=(OpDef(KIND, same(KIND), elementwise=lambda a, i, o: 3 * math.prod(o), probabilities=True,
                 torch=TorchCode(None, lambda a, x, m, ip: f"F.softmax({x[0]}, dim=1)"), style=Style()),
           # its backward makes the input's gradient and nothing beside it (measured in networks: tests/test_softmax_dim.py)
           OpDef(OVER, _over_shape, attrs=("dim",), elementwise=lambda a, i, o: 3 * math.prod(o),
                 saves=_saves_output,
                 torch=TorchCode(None, _over_call), style=Style("box", "#f5f5f5", lambda a: f"over dim {a['dim']}"))),
    from_torch={"Softmax": FromTorch(KIND, _from_torch), "fn:softmax": FromTorch(KIND, _from_torch, ("dim",)),
                "method:softmax": FromTorch(KIND, _from_torch, ("dim",))},
    from_onnx={"Softmax": FromOnnx(_from_onnx)},
)
