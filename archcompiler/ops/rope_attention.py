"""Multi-head self-attention with rotary position embeddings over a grid of patches (``op: rope_attention``:
EVA-02's attention, laid out as timm's ``EvaAttention``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, Float, LayerBase, NonNegInt, Pair, PosFloat, PosInt, Rate, pair
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

KIND = "rope_attention"
RUNTIME = "archcompiler.backends.torch.runtime:RopeAttention"


class RopeAttention(LayerBase):
    """Multi-head self-attention over ``prefix`` tokens (the class token) followed by a ``grid`` of patches
    row by row, with rotary position embeddings (RoPE, EVA-02's): each patch's q and k are rotated, pair by
    pair of features, by its position times a band of frequencies (a fixed table made from the grid: a
    buffer outside the state_dict); the prefix tokens are not rotated. Laid out as timm's ``EvaAttention``:
    ``qkv`` without bias, ``q_bias`` and ``v_bias`` (k's is zero), or ``q_proj``, ``k_proj`` and ``v_proj``
    (``qkv: separate``, EVA-02 Base's and Large's), an optional LayerNorm ``norm`` on the heads' output,
    ``proj``, so timm's keys load; each head's width must be a multiple of 4."""

    op: Literal["rope_attention"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features")
    grid: Pair = Field(description="the patches' grid, [height, width] (or one number: square); the sequence is "
                                   "prefix + height x width tokens")
    prefix: NonNegInt = Field(1, description="tokens before the grid, not rotated (the class token)")
    ref_grid: Pair | None = Field(None, description="the grid the positions are rescaled onto (EVA's "
                                                    "ref_feat_shape: the pretraining grid); default: none")
    temperature: PosFloat = Field(10000.0, description="the frequencies' base: band k of b is temperature^(-k/b)")
    offset: Float = Field(0.0, description="added to each position's row and column index (timm's grid_offset)")
    indexing: Literal["ij", "xy"] = Field("ij", description="ij: the first half of each head's bands follows the "
                                                            "row, the second the column; xy: the reverse")
    rotate: Literal["pairs", "halves"] = Field("pairs", description="pairs: features (0, 1), (2, 3), ... rotate "
                                                                    "together; halves: feature i with i + width / 2 "
                                                                    "(timm's rotate_half)")
    qkv: Literal["fused", "separate"] = Field("fused", description="fused: one qkv Linear (timm's qkv_fused); "
                                                                  "separate: q_proj, k_proj and v_proj")
    qkv_bias: Bool = Field(True, description="biases on q and v, k's zero (fused: q_bias and v_bias), as EVA's")
    norm: Bool = Field(False, description="a LayerNorm on the heads' output before proj (EVA-02's scale_attn_inner)")
    eps: PosFloat = Field(1e-6, description="the LayerNorm's eps (norm: true)")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")


def _lower(s: RopeAttention) -> list:
    return [("", KIND, {"heads": s.heads, "grid": pair(s.grid), "prefix": s.prefix,
                        "ref_grid": pair(s.ref_grid) if s.ref_grid is not None else None,
                        "temperature": s.temperature, "offset": s.offset, "indexing": s.indexing,
                        "rotate": s.rotate, "qkv": s.qkv, "qkv_bias": s.qkv_bias, "norm": s.norm, "eps": s.eps,
                        "dropout": s.dropout})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    (gh, gw), heads = a["grid"], a["heads"]
    if d % heads or (d // heads) % 4:
        raise ShapeError(f"heads={heads} must divide the dimension {d} of the sequence {fmt(shapes[0])} into "
                         "heads whose width is a multiple of 4 (two axes, sine and cosine per band)")
    if s != a["prefix"] + gh * gw:
        raise ShapeError(f"the sequence {fmt(shapes[0])} has {s} tokens, not prefix {a['prefix']} + the grid's "
                         f"{gh} x {gw}")
    return (s, d)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv's and proj's weights, q_bias, v_bias and proj's bias (and the norm's); buffers: k's zero bias
    and the rotary table (sine and cosine per patch and feature of a head)."""
    s, d = o
    weights, biases = 4 * d * d, (3 if a["qkv_bias"] else 1) * d
    if a["norm"]:
        weights, biases = weights + d, biases + d
    grid = a["grid"][0] * a["grid"][1]
    k_bias = d if a["qkv_bias"] and a["qkv"] == "fused" else 0
    return Params(weights, biases, k_bias + 2 * grid * (d // a["heads"]))


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The q, k, v and output projections (4 S D^2), QK^T and the scores times V (2 S^2 D)."""
    s, d = o
    return 4 * s * d * d + 2 * s * s * d


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The scores' scale, softmax (3 per score), the rotation of q and k (3 per feature: two products and a
    sum) and the norm (5 per feature)."""
    s, d = o
    grid = a["grid"][0] * a["grid"][1]
    return 3 * a["heads"] * s * s + 2 * 3 * grid * d + (5 * s * d if a["norm"] else 0)


def _rotated(a: Attrs, o: Shape) -> int:
    return a["grid"][0] * a["grid"][1] * o[1]


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Beyond its input and output, at its peak (measured: tests/test_eva.py). While k is rotated: the
    projections (3 S D; fused, q, k and v are views of one, alive to the end; separate, q's is freed once
    rotated), the rotated q (S D) and the rotation's four G x D tensors (G patch tokens: the turned k, its
    two products and their sum), less the output not made yet; while proj runs: the projections, the
    rotated q and k, the attention's output and the heads joined (a copy where there are several heads;
    one head's is a view), the norm's output (one head) or its statistics (several)."""
    s, d = o
    several, fused = a["heads"] > 1, a["qkv"] == "fused"
    during = (7 if several else 6) * s * d - (0 if fused else 2 * s * d)
    if a["norm"]:
        during += 2 * s if several else s * d
    return max((3 if fused else 2) * s * d + 4 * _rotated(a, o), during)


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (measured: tests/test_eva.py): the input (the projections'), v (fused: the whole
    projection, 3 S D, v a view of it), the rotated q and k (2 S D; the rotation's products keep only the
    table), the attention's output and its log-sum-exp per head and token, the heads joined (proj's or the
    norm's input: a copy where there are several heads), the norm's output and its mean and 1 / std."""
    s, d = o
    extra = (6 if a["qkv"] == "fused" else 4) * s * d + a["heads"] * s + (s * d if a["heads"] > 1 else 0)
    if a["norm"]:
        extra += s * d + 2 * s
    return ("input",), extra


def _module(a: Attrs, ins: list, out: tuple) -> str:
    (gh, gw), ref = a["grid"], a["ref_grid"] or (0, 0)
    return (f"RopeAttention({out[1]}, {a['heads']}, {a['qkv_bias']}, {a['eps'] if a['norm'] else 0.0!r}, "
            f"{a['dropout']!r}, {a['prefix']}, {gh}, {gw}, {ref[0]}, {ref[1]}, {float(a['temperature'])!r}, "
            f"{float(a['offset'])!r}, {a['indexing'] == 'xy'}, {a['rotate'] == 'halves'}, {a['qkv'] == 'fused'})")


def _identity(module: Any) -> bool:
    return module is None or type(module).__name__ == "Identity"


def _norm_eps(norm: Any, d: int) -> float | None:
    if _identity(norm):
        return None
    need(type(norm).__name__ == "LayerNorm" and tuple(getattr(norm, "normalized_shape", ())) == (d,)
         and getattr(norm, "weight", None) is not None and getattr(norm, "bias", None) is not None
         and not getattr(norm, "_fast_norm", False),
         f"attention with a {type(norm).__name__} before proj (archc's rope_attention takes a LayerNorm with "
         "weight and bias)")
    return float(norm.eps)


def _rope_settings(rope: Any, s: int, prefix: int, head: int) -> dict:
    """The fields of the timm RotaryEmbeddingCat that holds the table (its cached table for a fixed grid:
    the index grid, temperature bands, EVA's rescale), or Unmappable."""
    need(rope is not None, "a rotary table that no module holds (archc reads the grid and frequencies of timm's "
                           "RotaryEmbeddingCat)")
    name = type(rope).__name__
    need(name == "RotaryEmbeddingCat" and type(rope).__module__.startswith("timm.layers"),
         f"rotary embeddings from {name} (archc's rope_attention makes timm's RotaryEmbeddingCat table)")
    need(not getattr(rope, "in_pixels", True) and getattr(rope, "grid_type", "index") == "index",
         "rotary embeddings over pixel coordinates (in_pixels; archc's rope_attention rotates by the grid's index)")
    need(not getattr(rope, "aug_active", False), "rotary embeddings with coordinate augmentation in training")
    shape = getattr(rope, "feat_shape", None)
    need(shape is not None and len(shape) == 2 and int(shape[0]) * int(shape[1]) == s - prefix,
         f"rotary embeddings for a grid {shape} that is not the sequence's {s - prefix} patches")
    need(int(getattr(rope, "dim", 0)) == head, f"rotary embeddings of {getattr(rope, 'dim', 0)} features for heads "
                                               f"of {head}")
    need(getattr(rope, "grid_indexing", "ij") in ("ij", "xy"), f"grid indexing {rope.grid_indexing!r}")
    ref = getattr(rope, "ref_feat_shape", None)
    fields: dict = {"grid": [int(shape[0]), int(shape[1])]}
    if ref is not None:
        fields["ref_grid"] = [int(ref[0]), int(ref[1])]
    if float(rope.temperature) != 10000.0:
        fields["temperature"] = float(rope.temperature)
    if float(rope.grid_offset):
        fields["offset"] = float(rope.grid_offset)
    if rope.grid_indexing == "xy":
        fields["indexing"] = "xy"
    return fields


def _same_table(s: Any, fields: dict, dim: int, heads: int, prefix: int, table: Any) -> None:
    """archc's table for these fields (its runtime class's, which the importer hands over: ``s.runtime``) is
    the module's, value for value (what the rotation reads)."""
    (gh, gw), ref = fields["grid"], fields.get("ref_grid", (0, 0))
    made = s.runtime.RopeAttention(dim, heads, False, 0.0, 0.0, prefix, gh, gw, ref[0], ref[1],
                                   fields.get("temperature", 10000.0), fields.get("offset", 0.0),
                                   fields.get("indexing") == "xy", fields.get("rotate") == "halves").rope
    need(hasattr(table, "detach") and tuple(table.shape) == tuple(made.shape)
         and made.allclose(table.detach().to(made.dtype), rtol=0.0, atol=1e-6),
         "a rotary table other than the one archc makes from its grid and frequencies")


def _eva_in(s: Any) -> dict:
    """timm's EvaAttention (EVA-02): fused qkv with q_bias and v_bias, or q_proj, k_proj and v_proj; the
    rotary table its caller passes (its settings read from the timm RotaryEmbeddingCat that holds it, the
    table archc makes from them compared with it); SDPA, an optional norm, proj."""
    m = s.module
    d = s.shapes[0][-1] if s.shapes else 0
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "attention over other than one sequence")
    need(_identity(getattr(m, "q_norm", None)) and _identity(getattr(m, "k_norm", None)),
         "attention with qk_norm (a norm on q and k)")
    need(getattr(m, "gate", None) is None, "gated attention (a sigmoid gate on the heads' output)")
    heads, head = int(m.num_heads), int(m.head_dim)
    fused = getattr(m, "qkv", None) is not None
    need(heads * head == d and m.proj.in_features == d and m.proj.out_features == d and m.proj.bias is not None,
         "attention whose heads' width or output differs from its input's (attn_head_dim)")
    if fused:
        need(m.qkv.in_features == d and m.qkv.out_features == 3 * d and m.qkv.bias is None
             and (m.q_bias is None) == (m.v_bias is None), "a qkv of another width, or with a bias of its own")
        qkv_bias = m.q_bias is not None
    else:
        need(all(type(p).__name__ == "Linear" and p.in_features == p.out_features == d
                 for p in (m.q_proj, m.k_proj, m.v_proj)) and m.k_proj.bias is None
             and (m.q_proj.bias is None) == (m.v_proj.bias is None),
             "q, k and v projections of another width, or a bias on k")
        qkv_bias = m.q_proj.bias is not None
    need(not float(getattr(getattr(m, "proj_drop", None), "p", 0.0)),
         "attention with dropout after proj (proj_drop; archc's dropout is a layer of its own)")
    need(s.arg.get("attn_mask") is None and not s.arg.get("is_causal"),
         "attention with a mask or causal (archc's rope_attention attends over the whole sequence)")
    table = s.arg.get("rope")
    need(table is not None, "attention without rotary embeddings (EVA's abs-position-only attention; archc's "
                            "rope_attention rotates q and k)")
    prefix = int(m.num_prefix_tokens)
    fields = {"op": KIND, "heads": heads,
              **_rope_settings(s.arg.get("rope:holder"), s.shapes[0][0], prefix, head)}
    if prefix != 1:
        fields["prefix"] = prefix
    if getattr(m, "rotate_half", False):
        fields["rotate"] = "halves"
    _same_table(s, fields, d, heads, prefix, table)
    if not fused:
        fields["qkv"] = "separate"
    return {**fields, **_tail(qkv_bias, _norm_eps(m.norm, d),
                              float(getattr(getattr(m, "attn_drop", None), "p", 0.0)))}


def _tail(qkv_bias: bool, eps: float | None, dropout: float) -> dict:
    out: dict = {}
    if not qkv_bias:
        out["qkv_bias"] = False
    if eps is not None:
        out["norm"] = True
        if eps != 1e-6:
            out["eps"] = eps
    if dropout:
        out["dropout"] = dropout
    return out


def _own_in(s: Any) -> dict:
    """archc's own RopeAttention (runtime.py, as a built spec holds it): the fields from the settings it
    keeps as plain numbers, its table checked against the one they make."""
    m = s.module
    d, n = s.shapes[0][-1], s.shapes[0][0]
    fields = {"op": KIND, "heads": int(m.num_heads), "grid": [int(v) for v in m.grid]}
    if m.ref_grid[0]:
        fields["ref_grid"] = [int(v) for v in m.ref_grid]
    for key, value, default in (("prefix", int(m.prefix), 1), ("temperature", float(m.temperature), 10000.0),
                                ("offset", float(m.offset), 0.0), ("indexing", "xy" if m.xy else "ij", "ij"),
                                ("rotate", "halves" if m.half else "pairs", "pairs")):
        if value != default:
            fields[key] = value
    need(n == m.prefix + m.grid[0] * m.grid[1], "a rope_attention whose grid is not its sequence's")
    _same_table(s, fields, d, int(m.num_heads), int(m.prefix), m.rope)
    fused = hasattr(m, "qkv")
    if not fused:
        fields["qkv"] = "separate"
    bias = m.q_bias is not None if fused else m.q_proj.bias is not None
    return {**fields, **_tail(bias, _norm_eps(m.norm, d), float(m.dropout))}


_LATENCY = Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]), _macs(a, i, o)))


def _detail(a: Attrs) -> str:
    return f"{a['heads']} heads, RoPE {a['grid'][0]}x{a['grid'][1]}" + (" + norm" if a["norm"] else "")


OP = Op(
    layers=(LayerOp(RopeAttention, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "grid", "prefix", "ref_grid", "temperature", "offset", "indexing",
                                      "rotate", "qkv", "qkv_bias", "norm", "eps", "dropout"),
                 params=_params, macs=_macs, elementwise=_elementwise, depth="params", workspace=_workspace,
                 saves=_saves, mixes=True, latency=_LATENCY,
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", _detail)),),
    # timm's module (a leaf of the trace: its class in timm's EVA) and archc's own in a module it generated
    from_torch={"EvaAttention": FromTorch(KIND, _eva_in, modules=("timm.models.eva",)),
                "RopeAttention": FromTorch(KIND, _own_in)},
)
