"""Class attention (``op: class_attention``: CaiT's ``ClassAttn``): the class token attends over the
sequence, and only it is updated."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, PosInt, Rate
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

KIND = "class_attention"
RUNTIME = "archcompiler.backends.torch.runtime:ClassAttention"


class ClassAttention(LayerBase):
    """Multi-head attention of the sequence's first token (the class token, before the patches) over every
    token: S x D becomes 1 x D, the class token's update (CaiT's class-attention blocks; the patches are
    not changed). Laid out as timm's ``ClassAttn``: ``q`` (of the first token), ``k`` and ``v`` (of every
    token), each D -> D, and ``proj`` (D -> D); ``heads`` must divide the sequence's dimension."""

    op: Literal["class_attention"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features")
    qkv_bias: Bool = Field(True, description="biases on q, k and v (timm's qkv_bias)")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")


def _lower(s: ClassAttention) -> list:
    return [("", KIND, {"heads": s.heads, "qkv_bias": s.qkv_bias, "dropout": s.dropout})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    _, d = sequence(KIND, shapes)
    if d % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the dimension {d} of the sequence {fmt(shapes[0])}: "
                         f"each head takes {d} / {a['heads']} features")
    return (1, d)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """q, k, v and proj: 4 D^2, their biases 4D (D without q, k and v's)."""
    d = o[1]
    return Params(4 * d * d, (4 if a["qkv_bias"] else 1) * d)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """k and v of every token (2 S D^2), q and proj of the class token (2 D^2), its scores over the S tokens
    and their sum of the values (S D each)."""
    s, d = i[0]
    return 2 * s * d * d + 2 * d * d + 2 * s * d


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The scaling and softmax of the heads x S scores."""
    return 3 * a["heads"] * i[0][0]


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (runtime.py's ClassAttention: scaled_dot_product_attention's fused kernel keeps no
    scores): its input (read by q, k and v), q (D), k and v (2 S D), the attention's output (D: proj reads a
    view of it) and its log-sum-exp per head (measured: tests/test_cait.py)."""
    s, d = i[0]
    return ("input",), 2 * s * d + 2 * d + a["heads"]


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Beyond its input and output, at the forward's peak (proj's): q (D), k and v (2 S D) and the attention's
    output (D) (measured: tests/test_cait.py)."""
    s, d = i[0]
    return 2 * s * d + 2 * d


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward, beyond what it saved and the gradients of its input and output: the attention's backward
    gives the gradients of q, k and v (2 S D + D) before the Linears' backward sums k's and v's into the
    input's (measured: tests/test_cait.py)."""
    s, d = i[0]
    return s * d + d


def _from_torch(s: Any) -> dict:
    """timm's ClassAttn (a leaf of the trace, read by its package) and archc's own ClassAttention: q, k and v
    (D -> D, biases on all three or none), proj (D -> D, with bias), no dropout after proj."""
    m = s.module
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "attention over other than one sequence")
    d, h = s.shapes[0][1], m.num_heads
    lin = (m.q, m.k, m.v)
    need(all(x.in_features == x.out_features == d for x in (*lin, m.proj)) and m.proj.bias is not None
         and d % h == 0, "class attention whose q, k, v and proj are not D -> D (proj with its bias)")
    biased = {x.bias is not None for x in lin}
    need(len(biased) == 1, "class attention with a bias on some of q, k and v only")
    scale = getattr(m, "scale", (d // h) ** -0.5)
    need(abs(float(scale) - (d // h) ** -0.5) < 1e-12, f"scores scaled by {scale} (archc's {KIND} scales by "
                                                       "head_dim^-0.5)")
    need(not float(getattr(getattr(m, "proj_drop", None), "p", 0.0)),
         "attention with dropout after proj (proj_drop; archc's dropout is a layer of its own)")
    drop = getattr(m, "attn_drop", None)
    dropout = float(drop.p) if drop is not None else float(m.dropout)
    out: dict = {"op": KIND, "heads": h}
    if not biased.pop():
        out["qkv_bias"] = False
    if dropout:
        out["dropout"] = dropout
    return out


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return f"ClassAttention({out[1]}, {a['heads']}, {a['qkv_bias']}, {a['dropout']!r})"


OP = Op(
    layers=(LayerOp(ClassAttention, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "qkv_bias", "dropout"), params=_params, macs=_macs,
                 elementwise=_elementwise, depth="params", workspace=_workspace, saves=_saves,
                 backward_workspace=_backward_workspace, mixes=True,
                 latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], i[0][0]),
                                                                         _macs(a, i, o))),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", lambda a: f"{a['heads']} heads, class token"
                                                         + ("" if a["qkv_bias"] else ", no qkv bias"))),),
    # timm's class (a leaf of the trace, read in timm's CaiT) and archc's own in a module it generated
    from_torch={"ClassAttn": FromTorch(KIND, _from_torch, modules=("timm.models.cait",)),
                "ClassAttention": FromTorch(KIND, _from_torch)},
)
