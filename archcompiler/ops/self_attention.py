"""Multi-head self-attention over a sequence (``op: self_attention``), as nn.MultiheadAttention or
(``layout: timm``) as timm's ``Attention`` (ViT, DeiT)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase, PosInt, Rate
from ._base import (
    Attrs,
    FromOnnx,
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
TIMM = "timm_attention"         # the IR kind of layout: timm (its own kind: its torch code needs a helper class)
RUNTIME = "archcompiler.backends.torch.runtime:TokenAttention"


class SelfAttention(LayerBase):
    """Multi-head self-attention over a sequence, laid out as torch's ``nn.MultiheadAttention``
    (``in_proj_weight`` / ``in_proj_bias`` for q, k and v, ``out_proj``), so torchvision's keys load,
    or (``layout: timm``) as timm's ``Attention`` (``qkv``, ``proj``), so timm's ViT and DeiT keys
    load; ``heads`` must divide the sequence's dimension."""

    op: Literal["self_attention"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")
    layout: Literal["torch", "timm"] = Field("torch", description="the module it is laid out as: torch's "
                                             "nn.MultiheadAttention (in_proj_weight, in_proj_bias, out_proj) or "
                                             "timm's Attention (qkv, proj); the same computation")
    qkv_bias: Bool = Field(True, description="layout timm: a bias on the qkv projection (timm's qkv_bias); "
                                             "nn.MultiheadAttention always has one")

    @model_validator(mode="after")
    def _bias_is_timms(self) -> SelfAttention:
        if not self.qkv_bias and self.layout != "timm":
            raise ValueError("qkv_bias: false needs layout: timm (nn.MultiheadAttention always has its in_proj bias)")
        return self


def _lower(s: SelfAttention) -> list:
    if s.layout == "timm":
        return [("", TIMM, {"heads": s.heads, "dropout": s.dropout, "qkv_bias": s.qkv_bias})]
    return [("", KIND, {"heads": s.heads, "dropout": s.dropout})]


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
    keeps these, not the S x S scores (measured: tests/test_tokens.py). timm's layout keeps the same:
    its input (qkv's), the projection q, k and v are views of, the attention's output (proj reads a
    view of it) and the log-sum-exp (measured: tests/test_timm_attention.py)."""
    s, d = o
    return ("input",), 4 * s * d + a["heads"] * s


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """nn.MultiheadAttention in evaluation without autograd: its fused kernel (no workspace archc sees)
    for an even number of heads; for an odd number torch takes F.multi_head_attention_forward (its
    fast path needs even heads), which holds at most 6 S D at once beside its input (the projection
    and its copy with the bias; then q, k and v and their contiguous copy): 5 S D beyond the output
    (measured: tests/test_timm_attention.py)."""
    return 0 if a["heads"] % 2 == 0 else 5 * o[0] * o[1]


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


def _timm_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """timm's layout (runtime.py's TokenAttention), beyond its input and output: while the attention
    runs, the qkv projection (3 S D: q, k and v are views of it), the attention's output (S D) and its
    log-sum-exp per head and token (scaled_dot_product_attention's fused kernel keeps no S x S scores);
    the projection is freed before proj runs (measured: tests/test_timm_attention.py)."""
    s, d = o
    return 3 * s * d + a["heads"] * s


def _timm_backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """timm's layout in backward, at its peak (scaled_dot_product_attention's backward): the gradients
    of q, k and v (3 S D) and of the heads' output (S D); the memory pass already counts 2 S D there
    (the output's gradient, freed by then, and the input's, not made yet). (The pass also counts qkv's
    weight gradients, made later, from the op's start: a few 3 D^2 over, measured within 1%:
    tests/test_timm_attention.py.)"""
    return 2 * o[0] * o[1]


def _identity(module: Any) -> bool:
    return module is None or type(module).__name__ == "Identity"


def _timm_in(s: Any) -> dict:
    """timm's Attention (ViT, DeiT: timm.layers.Attention): q, k and v from one qkv Linear, scaled
    dot-product attention (fused_attn or not: the same computation), proj."""
    m = s.module
    d = s.shapes[0][-1] if s.shapes else 0
    need(_identity(getattr(m, "q_norm", None)) and _identity(getattr(m, "k_norm", None)),
         "attention with qk_norm (a norm on q and k; archc's self_attention has none)")
    need(_identity(getattr(m, "norm", None)), "attention with scale_norm (a norm before proj; archc's "
                                              "self_attention has none)")
    need(getattr(m, "gate", None) is None, "gated attention (a sigmoid gate on the heads' output)")
    need(m.qkv.in_features == d and m.qkv.out_features == 3 * d and m.proj.in_features == d
         and m.proj.out_features == d and d % m.num_heads == 0,
         "attention whose heads' width or output differs from its input's (attn_head_dim, dim_out)")
    need(m.proj.bias is not None, "attention without the proj bias")
    need(not float(getattr(getattr(m, "proj_drop", None), "p", 0.0)),
         "attention with dropout after proj (proj_drop; archc's dropout is a layer of its own)")
    need(s.arg.get("attn_mask") is None and not s.arg.get("is_causal") and len(s.shapes) == 1,
         "attention with a mask or causal (archc's self_attention attends over the whole sequence)")
    return _timm_fields(m.num_heads, m.qkv.bias is not None, float(getattr(getattr(m, "attn_drop", None), "p", 0.0)))


def _own_in(s: Any) -> dict:
    """archc's own TokenAttention (runtime.py, as a built spec holds it)."""
    m = s.module
    return _timm_fields(m.num_heads, m.qkv.bias is not None, float(m.dropout))


def _timm_fields(heads: int, qkv_bias: bool, dropout: float) -> dict:
    out: dict = {"op": KIND, "heads": heads, "layout": "timm"}
    if not qkv_bias:
        out["qkv_bias"] = False
    if dropout:
        out["dropout"] = dropout
    return out


_STYLE = Style("box", "#fce4d6", lambda a: f"{a['heads']} heads")
_LATENCY = Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]), _macs(a, i, o)))


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    return 3 * a["heads"] * o[0] ** 2


OP = Op(
    layers=(LayerOp(SelfAttention, _lower),),
    kinds=(
        # nn.MultiheadAttention (in_proj, scaled dot-product attention, out_proj), as torchvision's EncoderBlock
        # calls it (its fused path in evaluation, scaled_dot_product_attention otherwise)
        OpDef(KIND, _shape, attrs=("heads", "dropout"), params=lambda a, i, o: Params(4 * o[1] ** 2, 4 * o[1]),
              macs=_macs, elementwise=_elementwise, depth="params", workspace=_workspace, saves=_saves, mixes=True,
              latency=_LATENCY,
              torch=TorchCode(lambda a, ins, out: f"nn.MultiheadAttention({out[1]}, {a['heads']}, "
                                                  f"dropout={a['dropout']!r}, batch_first=True)",
                              lambda a, x, m, ip: f"{m}({x[0]}, {x[0]}, {x[0]}, need_weights=False)[0]"),
              style=_STYLE),
        # timm's Attention: qkv, scaled_dot_product_attention on views of it, proj (runtime.py's TokenAttention)
        OpDef(TIMM, _shape, attrs=("heads", "dropout", "qkv_bias"),
              params=lambda a, i, o: Params(4 * o[1] ** 2, (4 if a["qkv_bias"] else 1) * o[1]),
              macs=_macs, elementwise=_elementwise, depth="params", workspace=_timm_workspace, saves=_saves,
              backward_workspace=_timm_backward_workspace, mixes=True, latency=_LATENCY,
              torch=TorchCode(lambda a, ins, out: f"TokenAttention({out[1]}, {a['heads']}, {a['qkv_bias']}, "
                                                  f"{a['dropout']!r})",
                              lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
              style=Style("box", "#fce4d6", lambda a: f"{a['heads']} heads (timm)"
                                                      + ("" if a["qkv_bias"] else ", no qkv bias"))),
    ),
    from_torch={"MultiheadAttention": FromTorch(KIND, _from_torch),
                # timm's module (a leaf of the trace: its class in timm's packages) and archc's own in a
                # module it generated
                "Attention": FromTorch(TIMM, _timm_in, modules=("timm.layers", "timm.models")),
                "TokenAttention": FromTorch(TIMM, _own_in)},
    # the importer's pattern of nn.MultiheadAttention's exported nodes (its heads given)
    from_onnx={"pattern:attention": FromOnnx(lambda n: {"op": KIND, "heads": n.attrs["heads"]})},
)
