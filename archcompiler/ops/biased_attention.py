"""Multi-head self-attention over the positions of a square grid with a learned bias per head and relative
offset (``op: biased_attention``: EfficientFormer's ``Attention``, LeViT's attention bias)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosInt
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

KIND = "biased_attention"
RUNTIME = "archcompiler.backends.torch.runtime:BiasedAttention"


class BiasedAttention(LayerBase):
    """Multi-head self-attention over a sequence that is the positions of a square R x R grid (row by row),
    with a learned bias per head for each relative offset (|dy|, |dx|) of two positions added to the scores
    (EfficientFormer's and LeViT's attention biases, in place of a position embedding). Each head's q and k
    have ``key_dim`` features and its v ``value_dim`` (they may differ); laid out as timm's EfficientFormer
    ``Attention``: ``qkv`` (each head's q, k and v side by side), ``proj`` (the heads' values back to the
    input's width), ``attention_biases`` (heads x R^2) and the integer buffer ``attention_bias_idxs``
    (R^2 x R^2: the offset's |dy| R + |dx|). The table's size follows the sequence's length."""

    op: Literal["biased_attention"]
    heads: PosInt = Field(description="attention heads")
    key_dim: PosInt = Field(description="features of each head's query and key (timm's key_dim); the scores "
                                        "are scaled by key_dim^-0.5")
    value_dim: PosInt = Field(description="features of each head's value (timm's key_dim * attn_ratio); the "
                                          "heads' values, heads x value_dim, are projected back to the input's")


def _lower(s: BiasedAttention) -> list:
    return [("", KIND, {"heads": s.heads, "key_dim": s.key_dim, "value_dim": s.value_dim})]


def side(n: int) -> int | None:
    """The side of a square grid of ``n`` positions, None where ``n`` is no square."""
    r = math.isqrt(n)
    return r if r * r == n else None


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    if side(s) is None:
        raise ShapeError(f"{KIND} reads the positions of a square grid: the sequence {fmt(shapes[0])} has {s} "
                         "tokens, no square")
    return (s, d)


def _widths(a: Attrs, d: int) -> tuple[int, int]:
    """The qkv projection's output features and the heads' values' (proj's input)."""
    h = a["heads"]
    return h * (2 * a["key_dim"] + a["value_dim"]), h * a["value_dim"]


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv and proj (weights and biases), the bias table (heads x S: one per offset) and the index buffer
    (S x S)."""
    s, d = o
    qkv, values = _widths(a, d)
    return Params(d * qkv + values * d + a["heads"] * s, qkv + d, s * s)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The projections (S D (qkv + values)), the scores (S^2 key_dim per head) and the values' sum (S^2
    value_dim per head)."""
    s, d = o
    qkv, values = _widths(a, d)
    return s * d * (qkv + values) + a["heads"] * s * s * (a["key_dim"] + a["value_dim"])


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (runtime.py's BiasedAttention, the scores computed, not fused): qkv's input, q, k
    and v (views of the projection, or at a batch over one the contiguous copies the products make: as
    many elements), the softmax's output (heads x S x S) and the heads' values made contiguous for proj
    (measured: tests/test_timm_tokens.py)."""
    s, d = o
    qkv, values = _widths(a, d)
    return ("input",), s * qkv + a["heads"] * s * s + s * values


def _batch_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """Beyond its input and output, at the peak of the forward (measured: tests/test_timm_tokens.py): the
    projection (S qkv, alive throughout) and the bias read from the table (heads x S x S, once per batch),
    with the largest of: the scaled scores and their sum with the bias (2 heads x S x S); the scores and
    q and k copied contiguous for the product (at a batch over one: a view at one); the softmax's output,
    the heads' values and their copy for proj (or the copy of v the product makes, no larger)."""
    s, d = o
    qkv, values = _widths(a, d)
    h, scores = a["heads"], a["heads"] * s * s
    copies = batch > 1
    peak = max(2 * scores, scores + copies * 2 * s * h * a["key_dim"], scores + 2 * s * values,
               scores + s * values + s * d)
    return batch * (s * qkv + peak - s * d) + scores


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward, at the softmax's (its peak): the gradients of the probabilities and of the scores (2 heads
    x S x S) and of v, beside what it saved; the memory pass already counts the gradients of its output
    and input there (measured: tests/test_timm_tokens.py)."""
    s, d = o
    return max(0, 2 * a["heads"] * s * s - s * _widths(a, d)[1] - 2 * s * d)


def _from_torch(s: Any) -> dict:
    """timm's EfficientFormer Attention: qkv and proj Linears with biases, the bias table read at the index
    of the offsets |dy| R + |dx| over the R x R grid that the sequence is."""
    m = s.module
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "attention over other than one sequence")
    n, d = s.shapes[0]
    h, kd, vd = m.num_heads, m.key_dim, m.val_dim
    fields = {"op": KIND, "heads": h, "key_dim": kd, "value_dim": vd}
    qkv, values = _widths(fields, d)
    need(m.qkv.in_features == d and m.qkv.out_features == qkv and m.qkv.bias is not None
         and m.proj.in_features == values and m.proj.out_features == d and m.proj.bias is not None,
         "attention whose projections are not qkv (D -> heads x (2 key_dim + value_dim)) and proj back to D, "
         "with biases")
    need(abs(m.scale - kd ** -0.5) < 1e-12, f"scores scaled by {m.scale} (archc's {KIND} scales by key_dim^-0.5)")
    r = side(n)
    need(r is not None and tuple(m.attention_biases.shape) == (h, n), f"a bias table of "
         f"{tuple(m.attention_biases.shape)} for {n} tokens (archc's {KIND} has one per offset on the square grid)")
    need(m.attention_bias_idxs.tolist() == offsets(r), "a bias index other than the offsets |dy| R + |dx| of an "
                                                       "R x R grid")
    return fields


def offsets(r: int) -> list[list[int]]:
    """The bias index of an R x R grid read row by row: for positions p and q, |dy| R + |dx|."""
    cells = [(y, x) for y in range(r) for x in range(r)]
    return [[abs(py - qy) * r + abs(px - qx) for qy, qx in cells] for py, px in cells]


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return (f"BiasedAttention({out[1]}, {a['heads']}, {a['key_dim']}, {a['value_dim']}, {side(out[0])})")


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The scaling, the bias and the softmax of the heads x S x S scores."""
    return 3 * a["heads"] * o[0] ** 2


OP = Op(
    layers=(LayerOp(BiasedAttention, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "key_dim", "value_dim"), params=_params, macs=_macs,
                 elementwise=_elementwise, depth="params", batch_workspace=_batch_workspace, saves=_saves,
                 backward_workspace=_backward_workspace, mixes=True,
                 latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]),
                                                                         _macs(a, i, o))),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", lambda a: f"{a['heads']} heads, biased")),),
    # timm's class (a leaf of the trace, read by its package: timm has other classes named Attention) and
    # archc's own in a module it generated
    from_torch={"timm.models.efficientformer.Attention": FromTorch(KIND, _from_torch,
                                                                   modules=("timm.models.efficientformer",)),
                "BiasedAttention": FromTorch(KIND, _from_torch)},
)
