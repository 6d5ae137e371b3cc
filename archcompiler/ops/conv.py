"""2-D convolution, optionally followed by a batch norm and an activation (``op: conv``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase, NonNegPair, Pair, PosInt, pair
from . import _onnx
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
    Prim,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    Window,
    image,
    kxs,
    need,
    one,
    spatial,
    t2,
)
from .activation import Activation, lower_act
from .batch_norm import KIND as BATCH_NORM
from .batch_norm import BatchNormSpec, attrs_of

KIND = "conv2d"


class Conv(LayerBase):
    """2-D convolution, optionally followed by a normalisation and an activation."""

    op: Literal["conv"]
    out: PosInt = Field(description="output channels")
    kernel: Pair
    stride: Pair = 1
    padding: NonNegPair | Literal["same", "valid"] = 0
    dilation: Pair = 1
    groups: PosInt = 1
    bias: Bool | None = Field(None, description="default: true, false when 'norm' is set")
    norm: Literal["batch_norm"] | BatchNormSpec | None = None
    act: Activation = "none"

    @model_validator(mode="after")
    def _same_stride(self) -> Conv:
        if self.padding == "same" and pair(self.stride) != (1, 1):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch); give the padding as a number")
        return self

    def norm_spec(self) -> BatchNormSpec | None:
        if self.norm is None:
            return None
        return BatchNormSpec() if isinstance(self.norm, str) else self.norm

    def has_bias(self) -> bool:
        return self.norm is None if self.bias is None else self.bias


def _lower(s: Conv) -> list[Prim]:
    pad = s.padding if isinstance(s.padding, str) else pair(s.padding)
    conv = {"out_channels": s.out, "kernel": pair(s.kernel), "stride": pair(s.stride), "padding": pad,
            "dilation": pair(s.dilation), "groups": s.groups, "bias": s.has_bias()}
    norm = s.norm_spec()
    if norm is None:
        return [("", KIND, conv), *lower_act(s.act)]
    return [("/conv", KIND, conv), ("/bn", BATCH_NORM, attrs_of(norm.eps, norm.momentum)), *lower_act(s.act)]


def conv_padding(a: Attrs) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding (before, after) per axis; 'same' pads like PyTorch (the extra pixel after)."""
    pad = a["padding"]
    if pad == "same":
        out = []
        for k, d in zip(a["kernel"], a["dilation"]):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return out[0], out[1]
    if pad == "valid":
        return (0, 0), (0, 0)
    return (pad[0], pad[0]), (pad[1], pad[1])


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image("conv", shapes)
    if c % a["groups"] or a["out_channels"] % a["groups"]:
        raise ShapeError(f"groups={a['groups']} must divide both the input channels ({c}) and the "
                         f"output channels ({a['out_channels']})")
    return (a["out_channels"], *spatial(a, h, w, conv_padding(a)))


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    kh, kw = a["kernel"]
    return Params(a["out_channels"] * (i[0][0] // a["groups"]) * kh * kw, a["out_channels"] if a["bias"] else 0)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    kh, kw = a["kernel"]
    return math.prod(o) * (i[0][0] // a["groups"]) * kh * kw


def _window(a: Attrs, i: list[Shape]) -> Window:
    (ph, _), (pw, _) = conv_padding(a)
    return Window(a["kernel"], a["stride"], (ph, pw), a["dilation"])


def _class(a: Attrs, in_channels: int) -> str:
    """The calibrated convolution a convolution is timed like: depthwise, 7x7/2 (or 5x5/2) stems,
    else by kernel size."""
    k = max(a["kernel"])
    if a["groups"] > 1 and a["groups"] == in_channels:
        return "depthwise"
    if k >= 7 or (k >= 5 and max(a["stride"]) > 1):
        return "conv7x7s2"
    return {1: "conv1x1", 2: "conv3x3", 3: "conv3x3", 4: "conv5x5"}.get(k, "conv5x5")


def _kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    c, h, _ = i[0]
    return Kernel(_class(a, c), (c, a["out_channels"], h), _macs(a, i, o))


def _module(a: Attrs, ins: list, out: tuple) -> str:
    pad = f'"{a["padding"]}"' if isinstance(a["padding"], str) else t2(a["padding"])
    extra = ""
    if tuple(a["dilation"]) != (1, 1):
        extra += f", dilation={t2(a['dilation'])}"
    if a["groups"] != 1:
        extra += f", groups={a['groups']}"
    return (f"nn.Conv2d({ins[0][0]}, {a['out_channels']}, kernel_size={t2(a['kernel'])}, "
            f"stride={t2(a['stride'])}, padding={pad}{extra}, bias={a['bias']})")


def _from_torch(s: Any) -> dict:
    m = s.module
    need(m.padding_mode == "zeros", f"padding_mode {m.padding_mode!r} (archc pads with zeros)")
    return {"op": "conv", "out": m.out_channels, "kernel": one(m.kernel_size), "stride": one(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else one(m.padding), "dilation": one(m.dilation),
            "groups": m.groups, "bias": m.bias is not None}


def _from_onnx(n: Any) -> dict:
    w = n.consts[1]
    need(w is not None, "a weight that is computed, not an initializer")
    need(w.ndim == 4, f"a weight of shape {list(w.shape)} (archc reads a 2-d convolution: out x in x kh x kw)")
    need(min(w.shape) >= 1, f"an empty weight of shape {list(w.shape)}")
    _onnx.pairs(n, strides=1, dilations=1)
    groups = int(n.attrs.get("group", 1))
    need(groups >= 1 and w.shape[0] % groups == 0, f"group {groups} with {w.shape[0]} output channels")
    kernel = [int(k) for k in n.attrs.get("kernel_shape", w.shape[2:])]
    need(kernel == list(w.shape[2:]), f"kernel_shape {kernel} but a weight of shape {list(w.shape)}")
    channels = n.shapes[0][0] if n.shapes and n.shapes[0] else -1
    need(channels < 1 or w.shape[1] * groups == channels,
         f"a weight of shape {list(w.shape)} with group {groups} reads {w.shape[1] * groups} channels, "
         f"but its input has {channels}")
    bias = n.consts[2] if len(n.consts) > 2 else None
    need(bias is None or tuple(bias.shape) == (w.shape[0],),
         f"a bias of shape {list(getattr(bias, 'shape', []))} for {w.shape[0]} output channels")
    return {"op": "conv", "out": int(w.shape[0]), "kernel": _onnx.one(w.shape[2:]),
            "stride": _onnx.one(n.attrs.get("strides", [1, 1])), "padding": _onnx.pads(n),
            "dilation": _onnx.one(n.attrs.get("dilations", [1, 1])), "groups": groups, "bias": len(n.consts) > 2}


OP = Op(
    layers=(LayerOp(Conv, _lower),),
    kinds=(OpDef(
        KIND, _shape, attrs=("out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias"),
        params=_params, macs=_macs, elementwise=lambda a, i, o: 0, window=_window, depth="params", patch=kxs,
        saves=lambda a, i, o: (("input",), 0),
        latency=Latency(("conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise"), _kernel),
        fuses=frozenset({"affine", "activation", "siblings"}), channels_last=True,
        # with an activation fused into it (--optimize): archc's conv_act helper
        torch=TorchCode(_module, lambda a, x, m, ip: f"conv_act({x[0]}, {m}, {a['act']!r})" if a.get("act")
                        else f"{m}({x[0]})"),
        style=Style("box", "#dbe9f6", lambda a: str(a["out_channels"]))),),
    from_torch={"Conv2d": FromTorch(KIND, _from_torch)},
    from_onnx={"Conv": FromOnnx(_from_onnx, {1: "weight", 2: "bias"})},
)
