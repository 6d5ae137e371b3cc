"""LeViT's attention (``op: levit_attention``): ``biased_attention``'s learned bias per head and relative
offset, with each projection a Linear and a BatchNorm over the tokens (on a map a 1 x 1 convolution and a
BatchNorm2d), an activation before the output projection, and, with a stride, queries from a subsampled grid
(timm's LeViT ``Attention`` and ``AttentionDownsample``)."""

from __future__ import annotations

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
)
from .biased_attention import side

KIND = "levit_attention"
RUNTIME = "archcompiler.backends.torch.runtime:LevitAttention"
# the activations before proj that archc's LevitAttention builds, by torch module class
ACTS = {"hardswish": "Hardswish", "silu": "SiLU", "gelu": "GELU", "relu": "ReLU"}


class LevitAttention(LayerBase):
    """LeViT's multi-head attention over the positions of a square R x R grid (row by row): q, k and v from a
    Linear without bias and a BatchNorm over the tokens (``qkv``: each head's q, k and v side by side), the
    scores scaled by key_dim^-0.5 plus a learned bias per head for each relative offset (|dy|, |dx|) of two
    positions (``attention_biases``, read at the buffer ``attention_bias_idxs``), softmax, the heads' values
    joined, ``act`` and ``proj`` (a Linear and a BatchNorm over the tokens) to ``out`` features. With a
    ``stride`` (LeViT's ``AttentionDownsample``) k and v come from every position (``kv``) and the queries
    from every stride-th row and column of the grid (``q``), so the output is the grid of ceil(R / stride)
    positions a side. On a C x R x R map (timm's ``use_conv``: the levit_conv_* models) the projections are
    1 x 1 convolutions and BatchNorm2d and the output a map. Laid out as timm's LeViT: the state_dict keys are
    timm's (``qkv.linear``, ``qkv.bn``, ``proj.ln.linear``, ``proj.ln.bn``; ``kv``, ``q.ln`` with a stride),
    the bias index a buffer that is not saved."""

    op: Literal["levit_attention"]
    heads: PosInt = Field(description="attention heads")
    key_dim: PosInt = Field(description="features of each head's query and key (timm's key_dim); the scores "
                                        "are scaled by key_dim^-0.5")
    value_dim: PosInt = Field(description="features of each head's value (timm's key_dim * attn_ratio); the "
                                          "heads' values, heads x value_dim, are what proj reads")
    stride: PosInt = Field(1, description="queries from every stride-th row and column of the grid (LeViT's "
                                          "subsampling attention: 2); the output grid is ceil(R / stride) a side")
    out: PosInt | None = Field(None, description="output features (default: the input's)")
    act: Literal["hardswish", "silu", "gelu", "relu"] = Field(
        "hardswish", description="the activation of the heads' values before proj (LeViT's hard_swish; timm's "
                                 "levit_512 and _s8 variants: silu)")


def _lower(s: LevitAttention) -> list:
    return [("", KIND, {"heads": s.heads, "key_dim": s.key_dim, "value_dim": s.value_dim, "stride": s.stride,
                        "out_features": s.out, "act": s.act})]


def _tokens(shape: Shape) -> tuple[int, int]:
    """Positions and features: a sequence's S x D, a map's H W positions of C channels."""
    return (shape[0], shape[1]) if len(shape) == 2 else (shape[1] * shape[2], shape[0])


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """A sequence of R^2 tokens (row by row) to one of ceil(R / stride)^2; a map of R x R positions (timm's
    use_conv) to a map of ceil(R / stride) a side."""
    if len(shapes) != 1 or len(shapes[0]) not in (2, 3):
        raise ShapeError(f"{KIND} needs a sequence (tokens x dim) or a map, got {', '.join(fmt(s) for s in shapes)}")
    x = shapes[0]
    n, d = _tokens(x)
    r = side(n) if len(x) == 2 else x[1] if x[1] == x[2] else None
    if r is None:
        what = f"has {n} tokens, no square" if len(x) == 2 else "is no square"
        raise ShapeError(f"{KIND} reads the positions of a square grid: the input {fmt(x)} {what}")
    r2, out = (r - 1) // a["stride"] + 1, a["out_features"] or d
    return (r2 * r2, out) if len(x) == 2 else (out, r2, r2)


def _widths(a: Attrs) -> tuple[int, int, int]:
    """The projections' output features: qkv's (kv's with a stride), q's with a stride (else 0), the values'."""
    h, kd, vd = a["heads"], a["key_dim"], a["value_dim"]
    if a["stride"] == 1:
        return h * (2 * kd + vd), 0, h * vd
    return h * (kd + vd), h * kd, h * vd


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """Each projection's weight (no bias) and its BatchNorm's weight and bias (its running mean and variance
    and batch count are buffers), and the bias table (heads x S: one per offset). The bias index is a buffer
    torch does not save (timm's ``persistent=False``): not counted."""
    (s, d), (_, out) = _tokens(i[0]), _tokens(o)
    kv, q, values = _widths(a)
    norms = kv + q + out
    return Params(d * (kv + q) + values * out + norms + a["heads"] * s, norms, 2 * norms + 2 + (q > 0))


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The projections (S D kv, T D q, T values out), the scores (T S key_dim per head) and the values' sum
    (T S value_dim per head), for S tokens in and T out."""
    (s, d), (t, out) = _tokens(i[0]), _tokens(o)
    kv, q, values = _widths(a)
    return s * d * kv + t * d * q + t * values * out + a["heads"] * t * s * (a["key_dim"] + a["value_dim"])


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The scaling, the bias and the softmax of the heads x T x S scores, the activation, and the norms."""
    (s, _), (t, out) = _tokens(i[0]), _tokens(o)
    kv, q, values = _widths(a)
    return 3 * a["heads"] * t * s + t * values + s * kv + t * (q + out)


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (runtime_tokens.py's LevitAttention), per sample: the input (read by qkv's Linear),
    each projection's output (its BatchNorm's input) and its norm's output (q, k and v, or the products'
    copies of them: as many elements), the subsampled queries' input with a stride, the softmax's output
    (heads x T x S), the heads' values joined and activated (act's input and proj's) and proj's Linear
    output (the BatchNorms' statistics: saves_once)."""
    (s, d), (t, out) = _tokens(i[0]), _tokens(o)
    kv, q, values = _widths(a)
    sub = t * d if a["stride"] > 1 else 0
    return ("input",), 2 * s * kv + sub + 2 * t * q + a["heads"] * t * s + 2 * t * values + t * out


def _saves_once(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Once a training step: each BatchNorm's mean and 1 / std over the batch's tokens (2 per feature), and the
    bias index (T x S int64, two float32s each): a buffer, which the training step holds and the memory pass,
    counting parameters, would leave out (measured: tests/test_levit.py)."""
    kv, q, _ = _widths(a)
    (s, _), (t, out) = _tokens(i[0]), _tokens(o)
    return 2 * (kv + q + out) + 2 * t * s


def _batch_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """Beyond its input and output, at the peak of the forward (measured: tests/test_levit.py), for T positions
    out: the largest of the first projection and its norm (2 S kv); with a stride, the subsampled grid
    (copied from a sequence, pooled from a map), q's projection and its norm; then, with the normed
    projections (and a sequence's subsampled copy) alive, the scaled scores and their sum with the bias (2
    heads x T x S a sample, beside the bias read from the table once a batch); the probabilities with, on a
    sequence, v's copy and its product; with the heads' values joined and activated; and with proj's
    projection and norm."""
    (s, d), (t, out) = _tokens(i[0]), _tokens(o)
    kv, q, values = _widths(a)
    scores, seq = a["heads"] * t * s, len(i[0]) == 2
    keep = s * kv + ((seq * t * d) + t * q if a["stride"] > 1 else 0)
    per = max(2 * s * kv, s * kv + t * d + 2 * t * q, keep + scores + seq * s * a["heads"] * a["value_dim"] + t * values,
              keep + scores + 2 * t * values, keep + scores + t * values + 2 * t * out)
    return max(batch * (per - t * out), batch * (keep + 2 * scores - t * out) + scores)


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward, the larger of two moments (measured: tests/test_levit.py): at the softmax's, the gradients
    of the probabilities and of the scores (2 heads x T x S); at the product with v, the gradient of the
    probabilities, the heads' values' (T values) and v's (S heads x value_dim), with the probabilities
    still kept. By then proj's saved tensors are gone, and the gradient of the layer's input is not made yet,
    which the memory pass counts there. On a sequence (at a batch over one) the products keep contiguous
    copies of q and k and v, v's gone by the softmax's; on a map they keep views of the normed projection,
    whole until the end (S heads x value_dim more)."""
    (s, d), (t, out) = _tokens(i[0]), _tokens(o)
    h, values = a["heads"], _widths(a)[2]
    scores, v = h * t * s, s * h * a["value_dim"]
    peak = max(2 * scores - 2 * t * values, scores + v - t * values) if len(i[0]) == 2 else \
        v + max(2 * scores - 2 * t * values, scores - t * values)
    return max(0, peak - 2 * t * out - s * d)


def _norm_ok(ln: Any, i: int, o: int, conv: bool) -> bool:
    """timm's LinearNorm (a Linear of i to o features without bias, and a BatchNorm1d of o) or, on a map, its
    ConvNorm (a 1 x 1 convolution without bias and a BatchNorm2d), the norm with torch's defaults (archc's
    LevitAttention builds those)."""
    lin, bn = getattr(ln, "linear", None), getattr(ln, "bn", None)
    if conv:
        ok = (type(lin).__name__ == "Conv2d" and type(bn).__name__ == "BatchNorm2d" and lin.bias is None
              and (lin.in_channels, lin.out_channels) == (i, o) and tuple(lin.kernel_size) == (1, 1)
              and tuple(lin.stride) == (1, 1) and tuple(lin.padding) == (0, 0) and lin.groups == 1)
    else:
        ok = (type(lin).__name__ == "Linear" and type(bn).__name__ == "BatchNorm1d" and lin.bias is None
              and (lin.in_features, lin.out_features) == (i, o))
    return ok and bn.num_features == o and bn.eps == 1e-5 and bn.momentum == 0.1 and bn.affine \
        and bn.track_running_stats


def _down_ok(m: Any, stride: int) -> bool:
    """The queries' subsampling: timm's Downsample without a pool, or on a map an average pool of one pixel
    (every stride-th position); archc's LevitAttention has no module for it."""
    down = getattr(getattr(m, "q", None), "down", None)
    if down is None:
        return stride == 1 or type(m).__name__ == "LevitAttention"
    if type(down).__name__ == "AvgPool2d":
        return down.kernel_size in (1, (1, 1)) and down.stride in (stride, (stride, stride)) \
            and down.padding in (0, (0, 0)) and not down.ceil_mode
    return getattr(down, "pool", None) is None and down.stride == stride


def strided_offsets(r: int, stride: int) -> list[list[int]]:
    """The bias index of queries at every stride-th row and column of an R x R grid and keys at every
    position, both read row by row: for positions p and q, |dy| R + |dx| (timm's ``attention_bias_idxs``)."""
    keys = [(y, x) for y in range(r) for x in range(r)]
    return [[abs(py - qy) * r + abs(px - qx) for qy, qx in keys]
            for py in range(0, r, stride) for px in range(0, r, stride)]


def _from_torch(s: Any) -> dict:
    """timm's LeViT Attention and AttentionDownsample (and archc's LevitAttention): the projections
    LinearNorms (ConvNorms on a map) with torch's BatchNorm defaults, the scale key_dim^-0.5, the bias table and
    index of the square grid, queries subsampled without pooling."""
    m = s.module
    need(len(s.shapes) == 1 and len(s.shapes[0]) in (2, 3), "attention over other than one sequence or map")
    conv = len(s.shapes[0]) == 3
    need(bool(getattr(m, "use_conv", False)) == conv, "attention whose use_conv does not fit its input")
    n, d = _tokens(s.shapes[0])
    h, kd, vd = m.num_heads, m.key_dim, m.val_dim
    stride = int(getattr(m, "stride", 1))
    r = side(n)
    res = tuple(getattr(m, "resolution", ()))
    need(r is not None and res == (r, r) and (not conv or s.shapes[0][1] == r),
         f"a grid of {res} for {n} positions (archc's {KIND} reads a square grid)")
    act = next((k for k, v in ACTS.items() if type(m.proj.act).__name__ == v), None)
    need(act is not None, f"the activation {type(m.proj.act).__name__} before proj (archc's {KIND} has "
                          f"{', '.join(ACTS.values())})")
    out = _tokens(s.shape)[1]
    fields = {"op": KIND, "heads": h, "key_dim": kd, "value_dim": vd, **({"stride": stride} if stride > 1 else {}),
              **({"out": out} if out != d else {}), **({"act": act} if act != "hardswish" else {})}
    kv, q, values = _widths({**fields, "stride": stride})
    need(_norm_ok(m.qkv, d, kv, conv) if stride == 1 else _norm_ok(m.kv, d, kv, conv) and _norm_ok(m.q.ln, d, q, conv),
         "projections other than LeViT's LinearNorm (ConvNorm on a map: a Linear or 1 x 1 convolution without bias "
         "and a BatchNorm with torch's defaults) of the widths its heads give")
    need(_down_ok(m, stride),
         f"queries subsampled by a pool (archc's {KIND} takes every stride-th position)")
    need(_norm_ok(m.proj.ln, values, out, conv), "a proj other than a LinearNorm (ConvNorm) from the heads' values")
    need(abs(m.scale - kd ** -0.5) < 1e-12, f"scores scaled by {m.scale} (archc's {KIND} scales by key_dim^-0.5)")
    need(tuple(m.attention_biases.shape) == (h, n), f"a bias table of {tuple(m.attention_biases.shape)} for {n} "
                                                    f"positions (archc's {KIND} has one per offset on the grid)")
    need(m.attention_bias_idxs.tolist() == strided_offsets(r, stride),
         "a bias index other than the offsets |dy| R + |dx| of the grid's positions")
    return fields


def _module(a: Attrs, ins: list, out: tuple) -> str:
    s, d = _tokens(ins[0])
    return (f"LevitAttention({d}, {a['heads']}, {a['key_dim']}, {a['value_dim']}, {side(s)}, {a['stride']}, "
            f"{_tokens(out)[1]}, nn.{ACTS[a['act']]}(), {len(ins[0]) == 3})")


def _kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    t, out = _tokens(o)
    return Kernel("attention", (out, a["heads"], t), _macs(a, i, o))


def _detail(a: Attrs) -> str:
    return f"{a['heads']} heads, biased" + (f", stride {a['stride']}" if a["stride"] > 1 else "")


OP = Op(
    layers=(LayerOp(LevitAttention, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "key_dim", "value_dim", "stride", "out_features", "act"),
                 params=_params, macs=_macs, elementwise=_elementwise, depth="params",
                 batch_workspace=_batch_workspace, saves=_saves, saves_once=_saves_once,
                 backward_workspace=_backward_workspace, mixes=True,
                 latency=Latency(("attention",), _kernel),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", _detail)),),
    # timm's classes (leaves of the trace, read by their package: timm has other classes named Attention) and
    # archc's own in a module it generated
    from_torch={"timm.models.levit.Attention": FromTorch(KIND, _from_torch, modules=("timm.models.levit",)),
                "timm.models.levit.AttentionDownsample": FromTorch(KIND, _from_torch, modules=("timm.models.levit",)),
                "LevitAttention": FromTorch(KIND, _from_torch)},
)
