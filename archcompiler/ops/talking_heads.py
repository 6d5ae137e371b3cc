"""Multi-head self-attention with talking heads (``op: talking_heads``: CaiT's ``TalkingHeadAttn``)."""

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

KIND = "talking_heads"
RUNTIME = "archcompiler.backends.torch.runtime:TalkingHeadAttention"


class TalkingHeads(LayerBase):
    """Multi-head self-attention over a sequence whose heads talk (CaiT): the scores of all heads at each
    pair of tokens are mixed by a learned heads x heads linear map before the softmax, and the
    probabilities again after it. Laid out as timm's ``TalkingHeadAttn``: ``qkv`` (D -> 3D), ``proj``
    (D -> D), ``proj_l`` and ``proj_w`` (heads -> heads, with biases); ``heads`` must divide the
    sequence's dimension."""

    op: Literal["talking_heads"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features, and the heads' "
                                      "scores are mixed by heads x heads maps")
    qkv_bias: Bool = Field(True, description="a bias on the qkv projection (timm's qkv_bias)")
    dropout: Rate = Field(0.0, description="dropout on the mixed attention weights in training, in [0, 1)")


def _lower(s: TalkingHeads) -> list:
    return [("", KIND, {"heads": s.heads, "qkv_bias": s.qkv_bias, "dropout": s.dropout})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    if d % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the dimension {d} of the sequence {fmt(shapes[0])}: "
                         f"each head takes {d} / {a['heads']} features")
    return (s, d)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (3 D^2, its bias 3D or none) and proj (D^2 + D); proj_l and proj_w (h^2 + h each)."""
    d, h = o[1], a["heads"]
    return Params(4 * d * d + 2 * h * h, (4 if a["qkv_bias"] else 1) * d + 2 * h)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The q, k, v and output projections (4 S D^2), QK^T and the probabilities times V (S^2 D each), and
    the two mixes of the heads (S^2 h^2 each: a heads x heads map at every pair of tokens)."""
    s, d = o
    return 4 * s * d * d + 2 * s * s * d + 2 * s * s * a["heads"] ** 2


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """q's scaling (S D), the two mixes' biases and the softmax (exponential, sum, division) of the
    heads x S x S scores."""
    s, d = o
    return s * d + 5 * a["heads"] * s * s


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (runtime.py's TalkingHeadAttention, as timm's forward: the scores computed, not
    fused), beyond qkv's input (measured: tests/test_cait.py). Over one head, or at a batch of one, where the
    products and the mixes read views: the projection (3 S D: k and v are views of it), q scaled (S D), the
    heads' output for proj (S D), and three heads x S x S tensors (the scores proj_l reads, the softmax's
    output proj_w reads, the mixed weights the product with v reads). Over more heads at a batch over one
    (training's case, which archc counts) they read contiguous copies: q's, k's, v's and the heads' output
    (4 S D), the scores, the softmax's output and the mixed weights laid out for the Linears and the
    product (4 heads x S x S)."""
    s, d = o
    scores = a["heads"] * s * s
    return ("input",), (4 * s * d + 4 * scores if a["heads"] > 1 else 5 * s * d + 3 * scores)


def _batch_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """Transient memory at the forward's peak, beyond its input and the output (S D) the memory pass counts
    (measured: tests/test_cait.py), the largest of: at a mix of the heads, the projection and q (4 S D) with
    the scores, the Linear's output and the scores laid out for it (3 heads x S x S; two over one head, whose
    layout is a view); at the product with v (over more than one head and a batch over one: with the
    weights' and v's copies) and at proj, the projection, q, the heads' output (6 S D) and the weights
    (heads x S x S, twice with the copy)."""
    s, d = o
    h, scores = a["heads"], a["heads"] * s * s
    copies = batch > 1 and h > 1
    peak = max(3 * s * d + (3 if h > 1 else 2) * scores, 5 * s * d + (2 if copies else 1) * scores)
    return batch * peak


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward over one head, beyond what it saved and the gradients the memory pass counts: q's gradient
    (S D), made while the scores' are alive; over more heads the copies it saved are freed first (measured:
    tests/test_cait.py)."""
    return o[0] * o[1] if a["heads"] == 1 else 0


def _from_torch(s: Any) -> dict:
    """timm's TalkingHeadAttn (a leaf of the trace, read by its package) and archc's own TalkingHeadAttention:
    qkv (D -> 3D), proj (D -> D, with bias), proj_l and proj_w (heads -> heads, with biases), q scaled by
    head_dim^-0.5, no dropout after proj."""
    m = s.module
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "attention over other than one sequence")
    d, h = s.shapes[0][1], m.num_heads
    need(m.qkv.in_features == d and m.qkv.out_features == 3 * d and m.proj.in_features == d
         and m.proj.out_features == d and m.proj.bias is not None and d % h == 0,
         "attention whose projections are not qkv (D -> 3D) and proj (D -> D, with its bias)")
    need(all(x.in_features == x.out_features == h and x.bias is not None for x in (m.proj_l, m.proj_w)),
         "talking heads whose proj_l or proj_w is not a heads x heads Linear with bias")
    need(abs(float(m.scale) - (d // h) ** -0.5) < 1e-12, f"scores scaled by {m.scale} (archc's {KIND} scales "
                                                         "by head_dim^-0.5)")
    need(not float(getattr(getattr(m, "proj_drop", None), "p", 0.0)),
         "attention with dropout after proj (proj_drop; archc's dropout is a layer of its own)")
    drop = getattr(m, "attn_drop", None)
    dropout = float(drop.p) if drop is not None else float(m.dropout)
    out: dict = {"op": KIND, "heads": h}
    if m.qkv.bias is None:
        out["qkv_bias"] = False
    if dropout:
        out["dropout"] = dropout
    return out


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return f"TalkingHeadAttention({out[1]}, {a['heads']}, {a['qkv_bias']}, {a['dropout']!r})"


OP = Op(
    layers=(LayerOp(TalkingHeads, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "qkv_bias", "dropout"), params=_params, macs=_macs,
                 elementwise=_elementwise, depth="params", batch_workspace=_batch_workspace, saves=_saves,
                 backward_workspace=_backward_workspace, mixes=True,
                 latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]),
                                                                         _macs(a, i, o))),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", lambda a: f"{a['heads']} talking heads"
                                                         + ("" if a["qkv_bias"] else ", no qkv bias"))),),
    # timm's class (a leaf of the trace, read in timm's CaiT) and archc's own in a module it generated
    from_torch={"TalkingHeadAttn": FromTorch(KIND, _from_torch, modules=("timm.models.cait",)),
                "TalkingHeadAttention": FromTorch(KIND, _from_torch)},
)
