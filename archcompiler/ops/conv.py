"""2-D convolution, optionally followed by a batch norm and an activation (``op: conv``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

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
    pad_call,
    same_pads,
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
    padding: NonNegPair | Literal["same", "valid"] = Field(
        0, description="pixels on each side (a number or [h, w]); 'valid' is 0; 'same' pads so that the output is "
                       "ceil(input / stride), as TensorFlow and Keras do (the odd pixel after; at stride 1, PyTorch's "
                       "'same')")
    dilation: Pair = 1
    groups: PosInt = 1
    bias: Bool | None = Field(None, description="default: true, false when 'norm' is set")
    norm: Literal["batch_norm"] | BatchNormSpec | None = None
    act: Activation = "none"

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


def conv_padding(a: Attrs, size: tuple[int, int] | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding (before, after) per axis of a map of ``size`` (H, W); 'same' pads as TensorFlow does (the odd
    pixel after), which at stride 1 is PyTorch's 'same' whatever the size."""
    pad = a["padding"]
    if pad == "same":
        h, w = size if size is not None else (1, 1)
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"] if size is not None else (1, 1), a["dilation"]
        return same_pads(h, kh, sh, dh), same_pads(w, kw, sw, dw)
    if pad == "valid":
        return (0, 0), (0, 0)
    return (pad[0], pad[0]), (pad[1], pad[1])


def padded_before(a: Attrs, i: list[Shape]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The pads an F.pad applies before the convolution: TensorFlow's 'same' at a stride above 1 (PyTorch's
    Conv2d takes 'same' at stride 1 only); None where the convolution pads itself."""
    if a["padding"] != "same" or tuple(a["stride"]) == (1, 1):
        return None
    pads = conv_padding(a, tuple(i[0][1:3]))
    return pads if any(v for side in pads for v in side) else None


def _padded_elements(a: Attrs, i: list[Shape]) -> int:
    pads = padded_before(a, i)
    if pads is None:
        return 0
    c, h, w = i[0]
    return c * (h + sum(pads[0])) * (w + sum(pads[1]))


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image("conv", shapes)
    if c % a["groups"] or a["out_channels"] % a["groups"]:
        raise ShapeError(f"groups={a['groups']} must divide both the input channels ({c}) and the "
                         f"output channels ({a['out_channels']})")
    return (a["out_channels"], *spatial(a, h, w, conv_padding(a, (h, w))))


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    kh, kw = a["kernel"]
    return Params(a["out_channels"] * (i[0][0] // a["groups"]) * kh * kw, a["out_channels"] if a["bias"] else 0)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    kh, kw = a["kernel"]
    return math.prod(o) * (i[0][0] // a["groups"]) * kh * kw


def _window(a: Attrs, i: list[Shape]) -> Window:
    (ph, _), (pw, _) = conv_padding(a, tuple(i[0][1:3]))
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
    if a["padding"] == "same" and tuple(a["stride"]) != (1, 1):
        pad = "(0, 0)"          # the pads are applied before it (F.pad), as TensorFlow's are
    extra = ""
    if tuple(a["dilation"]) != (1, 1):
        extra += f", dilation={t2(a['dilation'])}"
    if a["groups"] != 1:
        extra += f", groups={a['groups']}"
    return (f"nn.Conv2d({ins[0][0]}, {a['out_channels']}, kernel_size={t2(a['kernel'])}, "
            f"stride={t2(a['stride'])}, padding={pad}{extra}, bias={a['bias']})")


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    # with an activation fused into it (--optimize): archc's conv_act helper
    return f"conv_act({x[0]}, {m}, {a['act']!r})" if a.get("act") else f"{m}({x[0]})"


def _shaped_call(a: Attrs, x: list[str], m: str, ip: bool, ins: list) -> str:
    pads = padded_before(a, ins)
    return _call(a, [pad_call(x[0], pads)] if pads else x, m, ip)


def _same_in(s: Any) -> dict:
    """timm's Conv2dSame: TensorFlow's 'same' padding at any stride (its forward pads by the input's size)."""
    fields = _from_torch(s)
    need(fields["padding"] in (0, "valid", [0, 0]), f"a Conv2dSame with padding {fields['padding']}")
    return {**fields, "padding": "same"}


def _from_torch(s: Any) -> dict:
    m = s.module
    need(m.padding_mode == "zeros", f"padding_mode {m.padding_mode!r} (archc pads with zeros)")
    return {"op": "conv", "out": m.out_channels, "kernel": one(m.kernel_size), "stride": one(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else one(m.padding), "dilation": one(m.dilation),
            "groups": m.groups, "bias": m.bias is not None}


def _onnx_padding(n: Any, kernel: list[int]) -> Any:
    """A Conv's pads as a spec's padding: symmetric pads as numbers; asymmetric ones (Keras's export of
    padding='same' at stride 2: 2 before and 3 after a 7x7/2), or auto_pad SAME_UPPER, as 'same' where they
    are TensorFlow's for this input; anything else refused."""
    auto = n.attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    strides = [int(v) for v in n.attrs.get("strides", [1, 1])]
    dilations = [int(v) for v in n.attrs.get("dilations", [1, 1])]
    size = n.shapes[0][1:3] if n.shapes and len(n.shapes[0]) == 3 else None
    same = [same_pads(x, k, s, d) for x, k, s, d in zip(size, kernel, strides, dilations)] if size else None
    if auto in ("SAME_UPPER", "VALID"):
        need(size is not None or auto == "VALID", "auto_pad SAME_UPPER on a map of unknown size")
        return "same" if auto == "SAME_UPPER" else 0
    need(auto == "NOTSET", f"auto_pad {auto} (archc reads SAME_UPPER, VALID and explicit pads)")
    pads = [int(v) for v in n.attrs.get("pads", [0, 0, 0, 0])]
    if len(pads) == 4 and pads[:2] != pads[2:] and same is not None and \
            [(pads[0], pads[2]), (pads[1], pads[3])] == [tuple(p) for p in same]:
        return "same"
    return _onnx.pads(n)


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
            "stride": _onnx.one(n.attrs.get("strides", [1, 1])), "padding": _onnx_padding(n, kernel),
            "dilation": _onnx.one(n.attrs.get("dilations", [1, 1])), "groups": groups, "bias": len(n.consts) > 2}


OP = Op(
    layers=(LayerOp(Conv, _lower),),
    kinds=(OpDef(
        KIND, _shape, attrs=("out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias"),
        params=_params, macs=_macs, elementwise=lambda a, i, o: 0, window=_window, depth="params", patch=kxs,
        # TensorFlow's 'same' at stride 2: the padded copy is made before the convolution (freed after it in
        # evaluation) and is what autograd keeps instead of the input
        workspace=lambda a, i, o: _padded_elements(a, i),
        saves=lambda a, i, o: ((), _padded_elements(a, i)) if padded_before(a, i) else (("input",), 0),
        # ... and in the backward pass, the gradient of the padded copy before it is cut to the input's
        backward_workspace=lambda a, i, o: _padded_elements(a, i) - math.prod(i[0]) if padded_before(a, i) else 0,
        latency=Latency(("conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise"), _kernel),
        fuses=frozenset({"affine", "activation", "siblings"}), channels_last=True,
        # with an activation fused into it (--optimize): archc's conv_act helper
        torch=TorchCode(_module, _call, shaped_call=_shaped_call),
        style=Style("box", "#dbe9f6", lambda a: str(a["out_channels"]))),),
    from_torch={"Conv2d": FromTorch(KIND, _from_torch),
                "Conv2dSame": FromTorch(KIND, _same_in, modules=("timm.layers", "timm.models"))},
    from_onnx={"Conv": FromOnnx(_from_onnx, {1: "weight", 2: "bias"})},
)
