"""Multi-head self-attention over a sequence (``op: self_attention``), as nn.MultiheadAttention."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosInt, Rate
from ._base import (
    Attrs,
    FromTorch,
    Kernel,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Params,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    fmt,
    need,
    sequence,
)

KIND = "self_attention"


class SelfAttention(LayerBase):
    """Multi-head self-attention over a sequence, laid out as torch's ``nn.MultiheadAttention``
    (``in_proj_weight`` / ``in_proj_bias`` for q, k and v, ``out_proj``), so torchvision's keys load;
    ``heads`` must divide the sequence's dimension."""

    op: Literal["self_attention"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    if d % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the dimension {d} of the sequence {fmt(shapes[0])}: "
                         f"each head takes {d} / {a['heads']} features")
    return (s, d)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The q, k, v and output projections (4 S D^2), QK^T (S^2 D: S x S scores per head, D / h deep,
    h heads) and the scores times V (S^2 D)."""
    s, d = o
    return 4 * s * d * d + 2 * s * s * d


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """F.multi_head_attention_forward in training: the input (in_proj's), q, k and v (one contiguous
    S x 3D copy of the projection), the attention's output (the heads' output out_proj reads is a
    view of it) and its log-sum-exp per head and token: scaled_dot_product_attention's fused kernel
    keeps these, not the S x S scores (measured: tests/test_tokens.py)."""
    s, d = o
    return ("input",), 4 * s * d + a["heads"] * s


def _from_torch(s: Any) -> dict:
    m = s.module
    need(m.batch_first and m._qkv_same_embed_dim and m.in_proj_bias is not None and m.bias_k is None
         and not m.add_zero_attn, "a MultiheadAttention other than torchvision's (batch_first, one in_proj with "
                                  "bias, no bias_k / add_zero_attn)")
    need(s.arg.get("need_weights") is False and len(s.shapes) == 1 and not s.arg.get("attn_mask"),
         "attention other than self-attention (query, key and value the same tensor, need_weights=False, no mask)")
    out = {"op": KIND, "heads": m.num_heads}
    if m.dropout:
        out["dropout"] = float(m.dropout)
    return out


OP = Op(
    layers=(LayerOp(SelfAttention, lambda s: [("", KIND, {"heads": s.heads, "dropout": s.dropout})]),),
    # nn.MultiheadAttention (in_proj, scaled dot-product attention, out_proj), as torchvision's EncoderBlock
    # calls it (its fused path in evaluation, scaled_dot_product_attention otherwise)
    kinds=(OpDef(
        KIND, _shape, attrs=("heads", "dropout"), params=lambda a, i, o: Params(4 * o[1] ** 2, 4 * o[1]),
        macs=_macs, elementwise=lambda a, i, o: 3 * a["heads"] * o[0] ** 2, depth="params", saves=_saves, mixes=True,
        latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]), _macs(a, i, o))),
        torch=TorchCode(lambda a, ins, out: f"nn.MultiheadAttention({out[1]}, {a['heads']}, dropout={a['dropout']!r}, "
                                            "batch_first=True)",
                        lambda a, x, m, ip: f"{m}({x[0]}, {x[0]}, {x[0]}, need_weights=False)[0]"),
        style=Style("box", "#fce4d6", lambda a: f"{a['heads']} heads")),),
    from_torch={"MultiheadAttention": FromTorch(KIND, _from_torch)},
)
