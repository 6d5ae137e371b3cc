"""Adaptive average pooling to a fixed output size (``op: adaptive_avg_pool``, ``op: global_avg_pool``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, Pair, pair
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Shape,
    Style,
    TorchCode,
    Window,
    image,
    need,
    one,
    per_map,
    t2,
)

KIND = "adaptive_avg_pool2d"


class AdaptiveAvgPool(LayerBase):
    """Average pooling to a fixed output size, whatever the input's (nn.AdaptiveAvgPool2d)."""

    op: Literal["adaptive_avg_pool"]
    output: Pair = Field(description="output height and width")


class GlobalAvgPool(LayerBase):
    """The average over the whole map: C x H x W becomes C x 1 x 1."""

    op: Literal["global_avg_pool"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image("adaptive pool", shapes)
    return (c, *a["output"])


def _window(a: Attrs, i: list[Shape]) -> Window:
    _, h, w = i[0]
    oh, ow = a["output"]
    return Window((-(-h // oh), -(-w // ow)), (max(1, h // oh), max(1, w // ow)), (0, 0))


def _from_torch(s: Any) -> dict:
    size = s.module.output_size if s.module is not None else s.arg["output_size"]
    size = [s.shape[1 + i] if v is None else int(v) for i, v in enumerate(size)] if isinstance(size, (tuple, list)) \
        else [int(size)] * 2
    return {"op": "global_avg_pool"} if size == [1, 1] else {"op": "adaptive_avg_pool", "output": one(size)}


def _mean_in(s: Any) -> dict:
    """x.mean([2, 3]) (MNASNet), or x.mean((1, 2)) of a channels-last map (timm's pooling of an N x H x W x C
    map): the same numbers as global_avg_pool's C x 1 x 1."""
    dims = s.arg.get("dim")
    dims = sorted(int(d) % 4 for d in (dims if isinstance(dims, (list, tuple)) else [dims])) if dims is not None else []
    need(dims == ([1, 2] if s.arg.get("channels_last") else [2, 3]) and len(s.shapes[0]) == 3,
         f"a mean over dims {s.arg.get('dim')} (archc's global_avg_pool averages height and width)")
    return {"op": "global_avg_pool"}


def _reduce_mean(n: Any) -> dict:
    axes = n.attrs.get("axes") or (list(n.consts[1]) if len(n.consts) > 1 and n.consts[1] is not None else None)
    need(axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3] and n.attrs.get("keepdims", 1),
         "a mean over other axes than height and width")
    return {"op": "global_avg_pool"}


_ARGS = ("dim", "keepdim")

OP = Op(
    layers=(LayerOp(AdaptiveAvgPool, lambda s: [("", KIND, {"output": pair(s.output)})]),
            LayerOp(GlobalAvgPool, lambda s: [("", KIND, {"output": (1, 1)})])),
    kinds=(OpDef(
        KIND, _shape, attrs=("output",), window=_window, depth="pooling",
        # to 1 x 1 torch takes the mean (whose backward needs only the input's shape: nothing kept, measured);
        # to a larger map adaptive_avg_pool2d's backward reads its input
        elementwise=lambda a, i, o: math.prod(i[0]),
        saves=lambda a, i, o: ((), 0) if tuple(a["output"]) == (1, 1) else (("input",), 0),
        latency=per_map(("adaptive_pool",), lambda a: "adaptive_pool", lambda a, i, o: math.prod(i[0]),
                        by_input=lambda a: True),
        torch=TorchCode(None, lambda a, x, m, ip: f"F.adaptive_avg_pool2d({x[0]}, {t2(a['output'])})"),
        style=Style("box", "#fde0c5")),),
    from_torch={"AdaptiveAvgPool2d": FromTorch(KIND, _from_torch),
                "fn:adaptive_avg_pool2d": FromTorch(KIND, _from_torch, ("output_size",)),
                "method:mean": FromTorch(KIND, _mean_in, _ARGS), "fn:mean": FromTorch(KIND, _mean_in, _ARGS)},
    from_onnx={"GlobalAveragePool": FromOnnx(lambda n: {"op": "global_avg_pool"}),
               "ReduceMean": FromOnnx(_reduce_mean)},
)
