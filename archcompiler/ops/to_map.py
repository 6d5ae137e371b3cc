"""A sequence of tokens laid back out as an image (``op: to_map``: ``x[:, skip:].transpose(1, 2).reshape(B, D, H,
W)``, as timm's feature maps of a vision transformer, ``forward_intermediates``, are made)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, NonNegInt, PosInt
from ._base import (
    AT_MEMORY_SPEED,
    Attrs,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    need,
    sequence,
)

KIND = "to_map"


class ToMap(LayerBase):
    """The tokens after the first `skip` (a class token, a distillation token) as a D x H x W map, row by
    row: the inverse of `to_tokens`, and the image a vision transformer's block gives as a feature map."""

    op: Literal["to_map"]
    skip: NonNegInt = Field(0, description="leading tokens that are no position (1: ViT's class token)")
    height: PosInt | None = Field(None, description="the map's height; default: a square map")


def grid(a: Attrs, s: int) -> tuple[int, int]:
    """The map's height and width for ``s`` tokens."""
    n = s - a["skip"]
    h = a["height"] if a["height"] is not None else math.isqrt(max(n, 0))
    if n <= 0 or h <= 0 or n % h or (a["height"] is None and h * h != n):
        shape = f"{a['height']} rows" if a["height"] is not None else "a square"
        raise ShapeError(f"{s} tokens less {a['skip']} skipped ({n}) do not lay out as {shape}")
    return h, n // h


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    return (d, *grid(a, s))


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    skip = f"[:, {a['skip']}:]" if a["skip"] else ""
    # a square's height is the root of the positions (exact: the shape pass checked it is a square)
    height = str(a["height"]) if a["height"] is not None else f"int(({x[0]}.shape[1] - {a['skip']}) ** 0.5)"
    return f"{x[0]}{skip}.transpose(1, 2).reshape({x[0]}.shape[0], {x[0]}.shape[2], {height}, -1)"


def _from_torch(s: Any) -> dict:
    """A sequence's tokens reshaped to H x W x D (``s.arg["height"]``: H), the map held channels-last."""
    h = s.arg["height"]
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2 and h > 0 and s.shapes[0][0] % h == 0,
         "a reshape of other than a sequence's tokens into rows")
    n = s.shapes[0][0]
    return {"op": KIND} if h * h == n else {"op": KIND, "height": h}


def _detail(a: Attrs) -> str:
    return "tokens -> image" + (f", skip {a['skip']}" if a["skip"] else "")


OP = Op(
    layers=(LayerOp(ToMap, lambda s: [("", KIND, {"skip": s.skip, "height": s.height})]),),
    # the reshape of the transposed view copies: the memory passes see a new tensor, autograd keeps nothing
    kinds=(OpDef(KIND, _shape, attrs=("skip", "height"), elementwise=lambda a, i, o: math.prod(o),
                 latency=AT_MEMORY_SPEED, torch=TorchCode(None, _call), style=Style("box", "#f5f5f5", _detail)),),
    # the importer recognises the pattern (a sequence reshaped to N x H x W x D: EdgeNeXt's x.reshape(B, H, W, C))
    from_torch={"pattern:map": FromTorch(KIND, _from_torch)},
)
