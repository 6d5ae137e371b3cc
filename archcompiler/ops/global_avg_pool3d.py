"""The average over a whole clip (``op: global_avg_pool3d``): C x T x H x W becomes C x 1 x 1 x 1, torchvision's
``nn.AdaptiveAvgPool3d((1, 1, 1))`` at the end of its video ResNets."""

from __future__ import annotations

import math
from typing import Literal

from ..spec.layers import LayerBase
from ._base import Attrs, Kernel, Latency, LayerOp, Op, OpDef, Shape, Style, TorchCode, Window
from .conv3d import clip

KIND = "global_avg_pool3d"


class GlobalAvgPool3d(LayerBase):
    """The average over a whole clip, its frames and their positions: C x T x H x W becomes C x 1 x 1 x 1
    (nn.AdaptiveAvgPool3d(1); a `flatten` after it gives the C features a classifier reads)."""

    op: Literal["global_avg_pool3d"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, _, _, _ = clip("global_avg_pool3d", shapes)
    return (c, 1, 1, 1)


def _window(a: Attrs, i: list[Shape]) -> Window:
    """Every position of a frame (the receptive field is over height and width)."""
    _, _, h, w = i[0]
    return Window((h, w), (h, w), (0, 0))


OP = Op(
    layers=(LayerOp(GlobalAvgPool3d, lambda s: [("", KIND, {})]),),
    kinds=(OpDef(
        KIND, _shape, window=_window, depth="pooling",
        # one addition per input element; torch takes the mean, whose backward needs only the input's shape
        elementwise=lambda a, i, o: math.prod(i[0]),
        latency=Latency(("adaptive_pool",), lambda a, i, o: Kernel("adaptive_pool", (i[0][0], i[0][0], i[0][2]),
                                                                   math.prod(i[0]))),
        torch=TorchCode(None, lambda a, x, m, ip: f"F.adaptive_avg_pool3d({x[0]}, 1)"),
        style=Style("box", "#fde0c5")),),
)
