"""Tokens and features swapped (``op: transpose``): a sequence of S tokens of D features becomes D tokens of
S features (MLP-Mixer's token mixing: ``x.transpose(1, 2)``, a Linear over the tokens, back)."""

from __future__ import annotations

import math
from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import (
    AT_MEMORY_SPEED,
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Shape,
    Style,
    TorchCode,
    need,
    sequence,
)

KIND = "transpose"


class Transpose(LayerBase):
    """A sequence's tokens and features swapped: S x D becomes D x S (`x.transpose(1, 2)`); a
    `linear` with `over: tokens` after it mixes the tokens (MLP-Mixer, ResMLP)."""

    op: Literal["transpose"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    return (d, s)


def _from_torch(s: Any) -> dict:
    dims = [v for k, v in sorted(s.arg.items()) if k.startswith("dim")]
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "a transpose of other than a sequence (tokens x features)")
    need(sorted(int(d) % 3 for d in dims) == [1, 2], f"a transpose of dims {dims} (archc's swaps tokens and features)")
    return {"op": KIND}


def _from_onnx(n: Any) -> dict:
    """Transpose perm 0 2 1 of a sequence (N x S x D): what the exporters write for ``x.transpose(1, 2)``."""
    need(len(n.shapes) == 1 and len(n.shapes[0]) == 2 and not n.last,
         "a Transpose of other than a sequence (N x tokens x features)")
    perm = [int(v) for v in n.attrs.get("perm", [2, 1, 0])]
    need(perm == [0, 2, 1], f"perm {perm} (archc's transpose swaps tokens and features: 0 2 1)")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(Transpose, lambda s: [("", KIND, {})]),),
    # a copy in archc's module (.contiguous()): the Linear that reads a transposed view copies it anyway (measured:
    # its input made contiguous), so the copy is made once, here, where the memory passes see it
    kinds=(OpDef(KIND, _shape, elementwise=lambda a, i, o: math.prod(o), latency=AT_MEMORY_SPEED,
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}.transpose(1, 2).contiguous()"),
                 style=Style("box", "#f5f5f5", lambda a: "tokens <-> features")),),
    from_torch={"method:transpose": FromTorch(KIND, _from_torch, ("dim0", "dim1")),
                "fn:transpose": FromTorch(KIND, _from_torch, ("dim0", "dim1"))},
    from_onnx={"Transpose": FromOnnx(_from_onnx)},
)
