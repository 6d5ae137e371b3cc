"""ShuffleNetV2's channel split (``op: channel_split``): one half of the channels, a view."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

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
    fmt,
    image,
)

KIND = "channel_split"
HALVES = ("first", "second")


class ChannelSplit(LayerBase):
    """ShuffleNetV2's channel split (torch's ``x.chunk(2, dim=1)``): one half of the input's channels,
    a view; the input must have an even number of channels."""

    op: Literal["channel_split"]
    half: Literal["first", "second"] = Field(description="which half of the channels: 'first' or 'second'")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    if c % 2:
        raise ShapeError(f"{KIND} halves the channels and needs an even number of them, got {fmt(shapes[0])}")
    return (c // 2, h, w)


OP = Op(
    layers=(LayerOp(ChannelSplit, lambda s: [("", KIND, {"half": HALVES.index(s.half)})]),),
    # x.chunk(2, dim=1)[half]: a view of half the channels; its backward builds a gradient of the whole
    # input (zeros where the other half is); with both halves read (ShuffleNetV2), autograd holds two such
    # gradients before it sums them: the transient is one more input (measured; a lone half is overcounted)
    kinds=(OpDef(KIND, _shape, attrs=("half",), elementwise=lambda a, i, o: 0, alias="view",
                 backward_workspace=lambda a, i, o: math.prod(i[0]), latency=A_STATEMENT,
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}.chunk(2, 1)[{a['half']}]"),
                 style=Style("box", "#f5f5f5", lambda a: HALVES[a["half"]] + " half")),),
    # the importers' split pattern: an ONNX Split (or torch's x.chunk(2, 1)) into two equal halves
    from_torch={"pattern:split": FromTorch(KIND, lambda s: {"op": KIND, "half": HALVES[s.arg["half"]]})},
    from_onnx={"pattern:split": FromOnnx(lambda n: {"op": KIND, "half": HALVES[n.attrs["half"]]})},
)
