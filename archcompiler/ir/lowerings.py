"""What each spec layer lowers to: a list of primitive ops ``(name suffix, op kind, attrs)``, by the
layer model's type. It reads the spec's layer models alone (not the resolver), so that resolving a
spec can ask the op table for a layer's shape (``ir/layer_shape.py``) without an import cycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec import layers as L
from ..spec.layers import pair

Prim = tuple[str, str, dict[str, Any]]       # (name suffix or "", op kind, attrs)


def _act(kind: str) -> list[Prim]:
    return [] if kind == "none" else [(f"/{kind}", "activation", {"kind": kind})]


def _conv(s: L.Conv) -> list[Prim]:
    pad = s.padding if isinstance(s.padding, str) else pair(s.padding)
    conv = {"out_channels": s.out, "kernel": pair(s.kernel), "stride": pair(s.stride), "padding": pad,
            "dilation": pair(s.dilation), "groups": s.groups, "bias": s.has_bias()}
    norm = s.norm_spec()
    if norm is None:
        return [("", "conv2d", conv), *_act(s.act)]
    return [("/conv", "conv2d", conv),
            ("/bn", "batch_norm2d", {"eps": norm.eps, "momentum": norm.momentum}), *_act(s.act)]


def _pool(kind: str) -> Callable[[Any], list[Prim]]:
    def lower(s: Any) -> list[Prim]:
        attrs = {"kernel": pair(s.kernel), "stride": s.stride_pair(), "padding": pair(s.padding),
                 "ceil_mode": s.ceil_mode}
        if isinstance(s, L.AvgPool):
            attrs["count_include_pad"] = s.count_include_pad
        return [("", kind, attrs)]
    return lower


def _linear(s: L.Linear) -> list[Prim]:
    """``over: channels``: a Linear per position of an image; ``tokens``: per token of a sequence
    (nn.Linear over the last dimension); ``flat``: the input flattened first."""
    attrs = {"out_features": s.out, "bias": s.bias}
    if s.over == "channels":
        return [("", "channel_linear", attrs), *_act(s.act)]
    if s.over == "tokens":
        return [("", "linear", attrs), *_act(s.act)]
    return [("/flatten", "flatten", {}), ("", "linear", attrs), *_act(s.act)]


LOWERINGS: dict[type, Callable[[Any], list[Prim]]] = {
    L.Conv: _conv,
    L.MaxPool: _pool("max_pool2d"),
    L.AvgPool: _pool("avg_pool2d"),
    L.AdaptiveAvgPool: lambda s: [("", "adaptive_avg_pool2d", {"output": pair(s.output)})],
    L.GlobalAvgPool: lambda s: [("", "adaptive_avg_pool2d", {"output": (1, 1)})],
    L.LRN: lambda s: [("", "lrn", {"size": s.size, "alpha": s.alpha, "beta": s.beta, "k": s.k})],
    L.BatchNorm: lambda s: [("", "batch_norm2d", {"eps": s.eps, "momentum": s.momentum})],
    L.Act: lambda s: [("", "activation", {"kind": s.op})],
    L.Dropout: lambda s: [("", "dropout", {"p": s.p})],
    L.StochasticDepth: lambda s: [("", "stochastic_depth", {"p": s.p, "mode": s.mode})],
    L.Flatten: lambda s: [("", "flatten", {})],
    L.Linear: _linear,
    L.LayerNorm: lambda s: [("", "layer_norm2d", {"eps": s.eps})],
    L.LayerScale: lambda s: [("", "layer_scale", {"init": s.init})],
    L.Softmax: lambda s: [("", "softmax", {})],
    L.Concat: lambda s: [("", "concat", {})],
    L.Add: lambda s: [("", "add", {}), *_act(s.act)],
    L.Mul: lambda s: [("", "mul", {})],
    L.Identity: lambda s: [("", "identity", {})],
    L.ChannelSplit: lambda s: [("", "channel_split", {"half": 0 if s.half == "first" else 1})],
    L.ChannelShuffle: lambda s: [("", "channel_shuffle", {"groups": s.groups})],
    L.PatchEmbed: lambda s: [("", "patch_embed", {"out_channels": s.out, "patch": s.patch, "bias": s.bias})],
    L.ClassToken: lambda s: [("", "class_token", {})],
    L.PosEmbedding: lambda s: [("", "pos_embedding", {})],
    L.SelfAttention: lambda s: [("", "self_attention", {"heads": s.heads, "dropout": s.dropout})],
    L.SelectToken: lambda s: [("", "select_token", {"index": s.index})],
    L.WindowAttention: lambda s: [("", "window_attention", {"heads": s.heads, "window": s.window, "shift": s.shift,
                                                            "pad": s.pad, "cosine": s.cosine, "dropout": s.dropout,
                                                            "grid": s.grid, "layout": s.layout})],
    L.PatchMerging: lambda s: [("", "patch_merging", {"out_channels": s.out, "norm": s.norm, "eps": s.eps})],
}
