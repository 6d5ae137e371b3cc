"""Multi-head self-attention over a sequence (``op: self_attention``), as nn.MultiheadAttention,
(``layout: timm``) as timm's ``Attention`` (ViT, DeiT) or (``layout: beit``) as timm's BEiT ``Attention``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase, Pair, PosInt, Rate
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
BEIT = "beit_attention"         # the IR kind of layout: beit (runtime.py's BeitAttention)
BEIT_RUNTIME = "archcompiler.backends.torch.runtime:BeitAttention"


class SelfAttention(LayerBase):
    """Multi-head self-attention over a sequence, laid out as torch's ``nn.MultiheadAttention``
    (``in_proj_weight`` / ``in_proj_bias`` for q, k and v, ``out_proj``), so torchvision's keys load,
    or (``layout: timm``) as timm's ``Attention`` (``qkv``, ``proj``), so timm's ViT and DeiT keys
    load, or (``layout: beit``) as timm's BEiT ``Attention`` (``qkv`` without bias, ``q_bias``,
    ``v_bias``, ``relative_position_bias_table`` over the ``grid`` of patches after a class token,
    ``proj``), so BEiT's keys load; ``heads`` must divide the sequence's dimension."""

    op: Literal["self_attention"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")
    layout: Literal["torch", "timm", "beit"] = Field("torch", description="the module it is laid out as: torch's "
                                                     "nn.MultiheadAttention (in_proj_weight, in_proj_bias, out_proj), "
                                                     "timm's Attention (qkv, proj; the same computation) or timm's "
                                                     "BEiT Attention (qkv, q_bias, v_bias, relative_position_bias_table, "
                                                     "proj)")
    qkv_bias: Bool = Field(True, description="layout timm: a bias on the qkv projection (timm's qkv_bias); layout "
                                             "beit: q's and v's biases (q_bias, v_bias; k's is zero); "
                                             "nn.MultiheadAttention always has one")
    grid: Pair | None = Field(None, description="layout beit: the patch grid (rows, columns) of the tokens after the "
                                                "first (the class token), row by row; a bias per head for each "
                                                "relative offset of two patches, and for the class token's pairs, is "
                                                "learned and added to the scores (BEiT's relative position bias over "
                                                "window_size); none: no position bias")

    @model_validator(mode="after")
    def _bias_is_timms(self) -> SelfAttention:
        if not self.qkv_bias and self.layout == "torch":
            raise ValueError("qkv_bias: false needs layout: timm or beit (nn.MultiheadAttention always has its "
                             "in_proj bias)")
        if self.grid is not None and self.layout != "beit":
            raise ValueError("grid needs layout: beit (the relative position bias of BEiT's attention)")
        return self


def _lower(s: SelfAttention) -> list:
    if s.layout == "beit":
        grid = (0, 0) if s.grid is None else (s.grid, s.grid) if isinstance(s.grid, int) else tuple(s.grid)
        return [("", BEIT, {"heads": s.heads, "dropout": s.dropout, "qkv_bias": s.qkv_bias, "grid": grid})]
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
    # (timm.models.beit's Attention has an entry of its own: layout beit)
    need(getattr(m, "q_bias", None) is None and getattr(m, "v_bias", None) is None,
         "attention with q and v biases of their own, k's zero (archc's layout timm has one qkv bias; layout "
         "beit is timm.models.beit's Attention)")
    need(getattr(m, "relative_position_bias_table", None) is None,
         "attention with a relative position bias table (archc's layout timm has no position bias; layout beit "
         "is timm.models.beit's Attention)")
    need(all(type(getattr(m, k, None)).__name__ == "Linear" for k in ("qkv", "proj")),
         "attention whose qkv or proj is not one Linear layer (LeViT's: a Linear and a BatchNorm1d over the "
         "tokens each, and a bias per head and offset; archc's self_attention has neither)")
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


# ----------------------------------------------------------------------------- timm's BEiT (timm/models/beit.py)


def _beit_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """A sequence whose tokens after the first are the grid's patches, row by row (its position bias covers them)."""
    s, d = _shape(a, shapes)
    h, w = a["grid"]
    if h and s != h * w + 1:
        raise ShapeError(f"the sequence {fmt(shapes[0])} is not a class token and a {h}x{w} grid of patches "
                         f"({h * w + 1} tokens): the grid must be the patch embedding's")
    return (s, d)


def _beit_table(a: Attrs) -> int:
    """The position bias table's rows: (2H - 1)(2W - 1) offsets of two patches and the class token's three."""
    h, w = a["grid"]
    return (2 * h - 1) * (2 * w - 1) + 3 if h else 0


def _beit_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (3 D^2, no bias) and proj (D^2 + D); q_bias and v_bias (2D); the table, rows x heads; the buffers:
    k's zero bias (D) and the S x S index into the table (outside the state_dict, as timm's)."""
    s, d = o
    grid = bool(a["grid"][0])
    return Params(4 * d * d + _beit_table(a) * a["heads"], (3 if a["qkv_bias"] else 1) * d,
                  (d if a["qkv_bias"] else 0) + (s * s if grid else 0))


def _beit_elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """timm's layout's, and the position bias added to the scores."""
    return (4 if a["grid"][0] else 3) * a["heads"] * o[0] ** 2


def _beit_batch_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """runtime.py's BeitAttention in evaluation, beyond its input and output: timm's layout's per sample (the
    projection, the attention's output and log-sum-exp per head and token: the fused kernel takes the
    position bias as its mask) and the position bias, heads x S^2, made once for the batch (measured:
    tests/test_beit.py)."""
    s, _ = o
    return batch * _timm_workspace(a, i, o) + (a["heads"] * s * s if a["grid"][0] else 0)


def _beit_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    return _beit_batch_workspace(a, i, o, 1)


def _beit_saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """Without the position bias, timm's layout's. With it, scaled_dot_product_attention takes its math path
    (the mask needs a gradient; the fused kernel takes none) and autograd keeps qkv's input, q and k scaled
    and copied for their batched product (2 S D), the softmax's scores (heads x S^2), v copied for the
    scores times v (S D) and proj's input (S D); with one head q, k and v stay views of the projection,
    which is kept too (2 S D more in all) (measured: tests/test_beit.py)."""
    s, d = o
    if not a["grid"][0]:
        return _saves(a, i, o)
    return ("input",), (6 if a["heads"] == 1 else 4) * s * d + a["heads"] * s * s


def _beit_backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Without the position bias, timm's layout's. With it, at the peak of its backward (the softmax's): the
    gradients of the scores and of the softmax's input (2 heads x S^2) and v's (S D), proj's input and v's
    copy freed by then (2 S D), and the 2 S D the memory pass counts there (the output's gradient, freed by
    then, and the input's, not made yet): 2 h S^2 - 3 S D for the op alone. In BEiT's block the residual's
    gradient (S D), which the pass frees at the layer scale's backward, is still held by the residual path:
    counted here (measured in BEiT's block within 1%: tests/test_beit.py; the pass counts the weights'
    gradients, made later, from the op's start, and no buffers, such as the S x S index)."""
    s, d = o
    if not a["grid"][0]:
        return _timm_backward_workspace(a, i, o)
    return max(0, 2 * a["heads"] * s * s - 2 * s * d)


def _beit_in(s: Any) -> dict:
    """timm's BEiT Attention (timm.models.beit): qkv without bias, q_bias and v_bias (k's zero), a relative
    position bias over its window_size (the patch grid after the class token), scaled dot-product attention
    (fused_attn or not: the same computation), proj."""
    m = s.module
    d = s.shapes[0][-1] if s.shapes else 0
    need(len(s.shapes) == 1 and s.arg.get("shared_rel_pos_bias") is None,
         "attention with a position bias shared by the blocks (BEiT's use_shared_rel_pos_bias; archc's has one "
         "table per block)")
    need(m.qkv.bias is None and (m.q_bias is None) == (m.v_bias is None), "a qkv projection with a bias of its own")
    need(m.qkv.in_features == d and m.qkv.out_features == 3 * d and m.proj.in_features == d
         and m.proj.out_features == d and d % m.num_heads == 0,
         "attention whose heads' width differs from dim / heads (attn_head_dim)")
    need(m.proj.bias is not None, "attention without the proj bias")
    need(not float(m.proj_drop.p), "attention with dropout after proj (proj_drop; archc's dropout is a layer of its own)")
    out: dict = {"op": KIND, "heads": m.num_heads, "layout": "beit"}
    if m.relative_position_bias_table is not None:
        out["grid"] = [int(n) for n in m.window_size]
    return _beit_fields(out, m.q_bias is not None, float(m.attn_drop.p))


def _own_beit_in(s: Any) -> dict:
    """archc's own BeitAttention (runtime.py, as a built spec holds it)."""
    m = s.module
    out: dict = {"op": KIND, "heads": m.num_heads, "layout": "beit"}
    if m.grid[0]:
        out["grid"] = list(m.grid)
    return _beit_fields(out, m.q_bias is not None, float(m.dropout))


def _beit_fields(out: dict, qkv_bias: bool, dropout: float) -> dict:
    if not qkv_bias:
        out["qkv_bias"] = False
    if dropout:
        out["dropout"] = dropout
    return out


def _beit_detail(a: Attrs) -> str:
    h, w = a["grid"]
    return f"{a['heads']} heads (BEiT" + (f", {h}x{w} position bias)" if h else ")") + \
        ("" if a["qkv_bias"] else ", no qkv bias")


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
        # timm's BEiT Attention: timm's, with q and v biases of their own and a relative position bias table
        # given to scaled_dot_product_attention as its mask (runtime.py's BeitAttention)
        OpDef(BEIT, _beit_shape, attrs=("heads", "dropout", "qkv_bias", "grid"), params=_beit_params,
              macs=_macs, elementwise=_beit_elementwise, depth="params", workspace=_beit_workspace,
              batch_workspace=_beit_batch_workspace, saves=_beit_saves,
              backward_workspace=_beit_backward_workspace, mixes=True, latency=_LATENCY,
              torch=TorchCode(lambda a, ins, out: f"BeitAttention({out[1]}, {a['heads']}, {a['qkv_bias']}, "
                                                  f"{a['dropout']!r}, {a['grid'][0]}, {a['grid'][1]})",
                              lambda a, x, m, ip: f"{m}({x[0]})", BEIT_RUNTIME),
              style=Style("box", "#fce4d6", _beit_detail)),
    ),
    from_torch={"MultiheadAttention": FromTorch(KIND, _from_torch),
                # timm's module (a leaf of the trace: its class in timm's packages) and archc's own in a
                # module it generated
                "Attention": FromTorch(TIMM, _timm_in, modules=("timm.layers", "timm.models")),
                "TokenAttention": FromTorch(TIMM, _own_in),
                "timm.models.beit.Attention": FromTorch(BEIT, _beit_in, modules=("timm.models.beit",)),
                "BeitAttention": FromTorch(BEIT, _own_beit_in)},
    # the importer's pattern of nn.MultiheadAttention's exported nodes (its heads given)
    from_onnx={"pattern:attention": FromOnnx(lambda n: {"op": KIND, "heads": n.attrs["heads"]})},
)
