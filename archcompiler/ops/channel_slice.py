"""Channels [start, end) of the input, a view (``op: channel_slice``: ``x[:, start:end]``, one part of
``torch.split(x, sizes, 1)``); ``--optimize``'s sibling fusion makes them too."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import LayerBase, NonNegInt, PosInt
from ._base import A_STATEMENT, Attrs, FromTorch, LayerOp, Op, OpDef, Shape, ShapeError, Style, TorchCode, image, need

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
    index, channels = s.arg.get("index"), s.shapes[0][0] if s.shapes and len(s.shapes[0]) == 3 else 0
    full = slice(None)
    ok = isinstance(index, tuple) and len(index) >= 2 and index[0] == full and isinstance(index[1], slice) \
        and all(i == full or i is Ellipsis for i in index[2:]) and channels
    need(ok, f"indexing with {index!r} (archc's channel_slice is x[:, a:b] of an image)")
    part = index[1]
    need(part.step in (None, 1), f"a slice with step {part.step}")
    start, end, _ = part.indices(channels)
    need(end > start, f"an empty slice {start}:{end}")
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
)
