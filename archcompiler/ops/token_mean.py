"""The mean of a sequence's tokens (``op: token_mean``): S x D becomes D features (timm's global_pool='avg'
over tokens, MLP-Mixer's and ResMLP's head)."""

from __future__ import annotations

import math
from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import Attrs, FromTorch, LayerOp, Op, OpDef, Shape, Style, TorchCode, need, per_map, sequence

KIND = "token_mean"


class TokenMean(LayerBase):
    """The mean of a sequence's tokens: S x D becomes a flat vector of D features (`x.mean(1)`)."""

    op: Literal["token_mean"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    _, d = sequence(KIND, shapes)
    return (d,)


def _from_torch(s: Any) -> dict:
    dims = s.arg.get("dim")
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2 and [int(d) % 3 for d in dims if d is not None] == [1]
         and not s.arg.get("keepdim"), f"a mean over dims {s.arg.get('dim')} of a sequence (archc's token_mean "
                                       "averages the tokens: x.mean(1))")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(TokenMean, lambda s: [("", KIND, {})]),),
    kinds=(OpDef(KIND, _shape, elementwise=lambda a, i, o: math.prod(i[0]), saves=lambda a, i, o: ((), 0),
                 mixes=True, window=lambda a, i: None,
                 latency=per_map(("adaptive_pool",), lambda a: "adaptive_pool", lambda a, i, o: math.prod(i[0])),
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}.mean(1)"), style=Style("box", "#fde0c5")),),
    # the importer gives a mean of a sequence this key (a mean of an image is a global average pool)
    from_torch={"mean:tokens": FromTorch(KIND, _from_torch, ("dim", "keepdim"))},
)
