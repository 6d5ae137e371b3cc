"""Channels [start, end) of the input, a view (``op: channel_slice``: ``x[:, start:end]``, one part of
``torch.split(x, sizes, 1)``); ``--optimize``'s sibling fusion makes them too."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import LayerBase, NonNegInt, PosInt
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
    axis1_slice,
    image,
    need,
)

KIND = "channel_slice"


class ChannelSlice(LayerBase):
    """Channels ``start`` to ``end`` (not included) of an image, a view: `x[:, start:end]` (GhostNet's,
    DPN's and ReXNet's slices; one part of a split into any sizes, as CSPNet, Res2Net and MixNet split)."""

    op: Literal["channel_slice"]
    start: NonNegInt = Field(0, description="the first channel, from 0")
    end: PosInt = Field(description="one past the last channel; at most the input's channels")

    @model_validator(mode="after")
    def _ordered(self) -> ChannelSlice:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    if not 0 <= a["start"] < a["end"] <= c:
        raise ShapeError(f"channels {a['start']}:{a['end']} are not within the input's {c}")
    return (a["end"] - a["start"], h, w)


def _index(s: Any) -> dict:
    """x[:, a:b] (and x[:, a:b, :, :], x[:, a:b, ...]) of an image: its channels a to b."""
    channels = s.shapes[0][0] if s.shapes and len(s.shapes[0]) == 3 else 0
    start, end = axis1_slice(s.arg.get("index"), channels, "archc's channel_slice is x[:, a:b] of an image")
    return {"op": KIND, "start": start, "end": end}


def _from_onnx(n: Any) -> dict:
    """A Slice of an image along its channels (axis 1) with constant bounds and step 1, its other axes whole
    (what the TorchScript exporter writes for x[:, a:b] and x.chunk(2, 1), its sizes read from the shape)."""
    need(len(n.shapes) == 1 and len(n.shapes[0]) == 3 and not n.last, "a Slice of other than an image")
    dims = (0, *n.shapes[0])           # (the batch: never sliced here)
    if "starts" in n.attrs:            # before opset 10: attributes
        starts, ends = list(n.attrs["starts"]), list(n.attrs["ends"])
        axes, steps = list(n.attrs.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        bounds = (n.consts + [None] * 5)[1:5]
        need(bounds[0] is not None and bounds[1] is not None, "a Slice whose bounds are computed, not constants")
        need(all(v is None or v.dtype.kind in "iu" and v.size <= 4 for v in bounds),
             "a Slice whose bounds are not up to 4 integers")
        given = [None if v is None else [int(x) for x in v.reshape(-1)] for v in bounds]
        starts, ends = given[0], given[1]
        axes = given[2] if given[2] is not None else list(range(len(starts)))
        steps = given[3] if given[3] is not None else [1] * len(starts)
    need(len(starts) == len(ends) == len(axes) == len(steps), "a Slice whose starts, ends, axes and steps differ in length")
    bounds = None
    for axis, start, end, step in zip(axes, starts, ends, steps):
        need(-4 <= int(axis) < 4, f"a Slice along axis {axis} of an image")
        axis = int(axis) % 4
        need(step == 1, f"a Slice with step {step} (archc's channel_slice is x[:, a:b])")
        if axis == 1:
            need(bounds is None, "a Slice along the channels twice")
            bounds = slice(int(start), int(end)).indices(dims[1])[:2]
        else:
            need(axis != 0 and int(start) in (0, -dims[axis]) and int(end) >= dims[axis],
                 f"a Slice along axis {axis} (archc's channel_slice cuts the channels: x[:, a:b])")
    need(bounds is not None, "a Slice that cuts nothing")
    start, end = bounds
    need(end > start, f"an empty Slice {start}:{end} of the channels")
    return {"op": KIND, "start": start, "end": end}


OP = Op(
    layers=(LayerOp(ChannelSlice, lambda s: [("", KIND, {"start": s.start, "end": s.end})]),),
    kinds=(OpDef(KIND, _shape, attrs=("start", "end"), elementwise=lambda a, i, o: 0, alias="view",
                 grad_passthrough=True, latency=A_STATEMENT,
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}[:, {a['start']}:{a['end']}]"),
                 style=Style("box", "#f5f5f5", lambda a: f"channels {a['start']}:{a['end']}")),),
    # x[:, a:b] (the importer gives the index); one part of a split (the importer gives its bounds)
    from_torch={"index:channels": FromTorch(KIND, _index, ("index",)),
                "pattern:slice": FromTorch(KIND, lambda s: {"op": KIND, "start": s.arg["start"], "end": s.arg["end"]})},
    from_onnx={"Slice": FromOnnx(_from_onnx)},
)
