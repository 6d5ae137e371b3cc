"""Tokens [start, end) of a sequence, a view (``op: token_slice``: ``x[:, start:end]``, the patch tokens after
a class token, as BEiT's and CaiT's average pool reads them)."""

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
    fmt,
    need,
    sequence,
)

KIND = "token_slice"


class TokenSlice(LayerBase):
    """Tokens ``start`` to ``end`` (not included) of a sequence, a view: `x[:, start:end]` (`x[:, 1:]`: the
    patch tokens after the class token, which BEiT's head averages)."""

    op: Literal["token_slice"]
    start: NonNegInt = Field(0, description="the first token, from 0 (the class token)")
    end: PosInt | None = Field(None, description="one past the last token; default the sequence's end")

    @model_validator(mode="after")
    def _ordered(self) -> TokenSlice:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    end = s if a["end"] is None else a["end"]
    if not a["start"] < end <= s:
        raise ShapeError(f"tokens {a['start']}:{end} are not within the sequence {fmt(shapes[0])} of {s} tokens")
    return (end - a["start"], d)


def _from_torch(s: Any) -> dict:
    """x[:, a:b] (and x[:, a:b, :], x[:, a:b, ...]) of a sequence: its tokens a to b."""
    tokens = s.shapes[0][0] if s.shapes and len(s.shapes[0]) == 2 else 0
    start, end = axis1_slice(s.arg.get("index"), tokens, "archc's token_slice is x[:, a:b] of a sequence")
    return {"op": KIND, "start": start} | ({} if end == tokens else {"end": end})


def _from_onnx(n: Any) -> dict:
    """A Slice of a sequence (N x S x D) along its tokens (axis 1) with constant bounds and step 1 (what the
    exporters write for ``x[:, a:b]``); read where channel_slice, the Slice of an image, refuses it."""
    need(len(n.shapes) == 1 and len(n.shapes[0]) == 2 and not n.last,
         "a Slice other than x[:, a:b] of an image's channels (channel_slice) or of a sequence's tokens")
    tokens = n.shapes[0][0]
    bounds = (n.consts + [None] * 5)[1:5]
    need(bounds[0] is not None and bounds[1] is not None, "a Slice whose bounds are computed, not constants")
    need(all(v is None or v.dtype.kind in "iu" and v.size == 1 for v in bounds),
         "a Slice of a sequence along more than one axis")
    start, end, axis, step = (None if v is None else int(v.reshape(-1)[0]) for v in bounds)
    need(axis in (None, 1, -2) and step in (None, 1), f"a Slice of a sequence along axis {axis}, step {step} "
                                                       "(archc's token_slice is x[:, a:b])")
    start, end, _ = slice(start, end).indices(tokens)
    need(end > start, f"an empty Slice {start}:{end} of the tokens")
    return {"op": KIND, "start": start} | ({} if end == tokens else {"end": end})


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    return f"{x[0]}[:, {a['start']}:{'' if a['end'] is None else a['end']}]"


def _detail(a: Attrs) -> str:
    return f"tokens {a['start']}:{'' if a['end'] is None else a['end']}"


OP = Op(
    layers=(LayerOp(TokenSlice, lambda s: [("", KIND, {"start": s.start, "end": s.end})]),),
    kinds=(OpDef(KIND, _shape, attrs=("start", "end"), elementwise=lambda a, i, o: 0, alias="view",
                 latency=A_STATEMENT, torch=TorchCode(None, _call), style=Style("box", "#f5f5f5", _detail)),),
    # x[:, a:b] of a sequence (the importer gives the index)
    from_torch={"index:tokens": FromTorch(KIND, _from_torch, ("index",))},
    # (an ONNX Slice of an image is channel_slice's; of a sequence, this)
    from_onnx={"else:Slice": FromOnnx(_from_onnx)},
)
