"""An image's positions as a sequence of tokens (``op: to_tokens``: ``x.flatten(2).transpose(1, 2)``, as
EfficientFormer's ``Flat`` and LeViT's stem end)."""

from __future__ import annotations

import math
from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import AT_MEMORY_SPEED, Attrs, FromOnnx, FromTorch, LayerOp, Op, OpDef, Shape, Style, TorchCode, image, need

KIND = "to_tokens"


class ToTokens(LayerBase):
    """An image's positions as a sequence: C x H x W becomes H * W tokens of C features, row by row
    (`x.flatten(2).transpose(1, 2)`); the layers after it (`layer_norm`, `linear` with `over: tokens`,
    attention) read tokens. Unlike `patch_embed` it computes nothing: the features are the channels."""

    op: Literal["to_tokens"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    return (h * w, c)


def _from_torch(s: Any) -> dict:
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3 and s.shape == _shape({}, s.shapes),
         "a flatten and transpose of other than an image's positions (archc's to_tokens is x.flatten(2).transpose(1, 2))")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(ToTokens, lambda s: [("", KIND, {})]),),
    # a copy in archc's module (.contiguous()), as transpose makes: what reads the transposed view (a LayerNorm, a
    # Linear) copies it anyway, so the copy is made once, here, where the memory passes see it; autograd keeps nothing
    kinds=(OpDef(KIND, _shape, elementwise=lambda a, i, o: math.prod(o), latency=AT_MEMORY_SPEED,
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}.flatten(2).transpose(1, 2).contiguous()"),
                 style=Style("box", "#f5f5f5", lambda a: "image -> tokens")),),
    # the importer recognises the pattern (a flatten of the map's positions, then a transpose of its two axes)
    from_torch={"pattern:tokens": FromTorch(KIND, _from_torch)},
    # the ONNX reader's pattern (importers/onnx/layouts.py)
    from_onnx={"pattern:tokens": FromOnnx(lambda n: {"op": KIND})},
)
