"""Tokens [start, end) of a sequence, a view (``op: token_slice``: ``x[:, start:end]``, the patch tokens after
a class token, as BEiT's and CaiT's average pool reads them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import LayerBase, NonNegInt, PosInt
from ._base import (
    A_STATEMENT,
    Attrs,
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
)
