"""ShuffleNet's channel shuffle (Zhang et al. 2018; torchvision's ``channel_shuffle``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosInt
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
    image,
    per_map,
)

KIND = "channel_shuffle"


class ChannelShuffle(LayerBase):
    """ShuffleNet's channel shuffle: the channels, seen as groups x (C / groups), transposed to
    (C / groups) x groups, so that each group of the next grouped layer reads every group of this one."""

    op: Literal["channel_shuffle"]
    groups: PosInt = Field(description="the number of groups (ShuffleNetV2: 2); it must divide the channels")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    if c % a["groups"]:
        raise ShapeError(f"{KIND}: groups={a['groups']} must divide the input's channels, got {fmt(shapes[0])}")
    return shapes[0]


def _layer(groups: int) -> dict:
    return {"op": KIND, "groups": groups}


OP = Op(
    layers=(LayerOp(ChannelShuffle, lambda s: [("", KIND, {"groups": s.groups})]),),
    kinds=(OpDef(
        KIND, _shape, attrs=("groups",),
        # torchvision's: view as (N, groups, C / groups, H, W), transpose, copy, view back
        torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}.unflatten(1, ({a['groups']}, -1)).transpose(1, 2).flatten(1, 2)"),
        style=Style("box", "#eeeeee", lambda a: f"groups {a['groups']}"),
        # a transposed view copied to a new tensor (torchvision's .contiguous()); autograd keeps nothing;
        # timed like the calibrated concat (one copy of the map)
        latency=per_map(("concat",), lambda a: "concat", elements)),),
    # the importers recognise the pattern (a reshape to N x g x C/g x H x W, a transpose of the two channel
    # axes, a reshape back), and give its number of groups
    from_torch={"pattern:shuffle": FromTorch(KIND, lambda s: _layer(s.arg["groups"]))},
    from_onnx={"pattern:shuffle": FromOnnx(lambda n: _layer(n.attrs["groups"]))},
)
