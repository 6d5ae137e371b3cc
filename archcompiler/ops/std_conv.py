"""A convolution with scaled weight standardisation (NF-ResNets and NFNets, Brock et al. 2021; ``op: std_conv``).

Its window, shape, MACs and latency are the convolution's (``ops/conv.py``'s functions); what differs is the
weight it convolves with, recomputed from the learned one at each call, and its per-channel ``gain``."""

from __future__ import annotations

import math
import struct
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, NonNegPair, Pair, PosFloat, PosInt, pair
from . import conv
from ._base import (
    Attrs,
    FromTorch,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Params,
    Prim,
    Shape,
    Style,
    TorchCode,
    kxs,
    need,
    pad_call,
    t2,
)
from .activation import Activation, lower_act

KIND = "std_conv2d"


class StdConv(LayerBase):
    """2-D convolution with scaled weight standardisation (NF-ResNets, NFNets; timm's ScaledStdConv2d): at each
    call every output channel's weights are standardised (less their mean, over their standard deviation) and
    multiplied by a learned per-channel gain and gamma / sqrt(fan-in) before the convolution; optionally followed
    by an activation."""

    op: Literal["std_conv"]
    out: PosInt = Field(description="output channels")
    kernel: Pair
    stride: Pair = 1
    padding: NonNegPair | Literal["same", "valid"] = Field(
        0, description="pixels on each side (a number or [h, w]); 'valid' is 0; 'same' pads so that the output is "
                       "ceil(input / stride), as TensorFlow does (timm's ScaledStdConv2dSame)")
    dilation: Pair = 1
    groups: PosInt = 1
    bias: Bool = True
    gamma: PosFloat = Field(1.0, description="the standardised weight is scaled by gamma / sqrt(fan-in) (timm's "
                                             "NF nets: the activation's gain, 1.7139588594436646 for ReLU)")
    eps: PosFloat = Field(1e-6, description="added to each output channel's weight variance (timm's NF nets: 1e-5)")
    act: Activation = "none"


def _lower(s: StdConv) -> list[Prim]:
    pad = s.padding if isinstance(s.padding, str) else pair(s.padding)
    attrs = {"out_channels": s.out, "kernel": pair(s.kernel), "stride": pair(s.stride), "padding": pad,
             "dilation": pair(s.dilation), "groups": s.groups, "bias": s.bias, "gamma": s.gamma, "eps": s.eps}
    return [("", KIND, attrs), *lower_act(s.act)]


def _weights(a: Attrs, i: list[Shape]) -> int:
    """The convolution's weight elements (out x in / groups x kh x kw): the standardised copy's size."""
    return conv._params(a, i, ()).weights


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    plain = conv._params(a, i, o)
    return Params(plain.weights + a["out_channels"], plain.biases)


def _module(a: Attrs, ins: list, out: tuple) -> str:
    pad = f'"{a["padding"]}"' if isinstance(a["padding"], str) else t2(a["padding"])
    if a["padding"] == "same" and tuple(a["stride"]) != (1, 1):
        pad = "(0, 0)"          # the pads are applied before it (F.pad), as TensorFlow's are
    return (f"ScaledStdConv2d({ins[0][0]}, {a['out_channels']}, {t2(a['kernel'])}, {t2(a['stride'])}, {pad}, "
            f"{t2(a['dilation'])}, {a['groups']}, {a['bias']}, {a['gamma']!r}, {a['eps']!r})")


def _call(a: Attrs, x: list[str], m: str, ip: bool, ins: list) -> str:
    pads = conv.padded_before(a, ins)
    return f"{m}({pad_call(x[0], pads) if pads else x[0]})"


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _gamma(m: Any, fan_in: int) -> float:
    """gamma from timm's ``scale`` (gamma / sqrt(fan-in)), rounded to 12 digits where that gives the same scale in
    float32, as the module computes with it (the gain times the scale is a float32 product): every layer of a
    model then writes the same number, where the exact quotient differs in its last digits with the fan-in."""
    exact = float(m.scale) * math.sqrt(fan_in)
    short = float(f"{exact:.12g}")
    return short if _float32(short * fan_in ** -0.5) == _float32(float(m.scale)) else exact


def _from_torch(s: Any) -> dict:
    """timm's ScaledStdConv2d (and ScaledStdConv2dSame: 'same' padding, TensorFlow's at any stride), and archc's
    own: its ``weight``, ``bias`` and ``gain`` (out x 1 x 1 x 1) are the layer's."""
    m = s.module
    fields = {k: v for k, v in conv._from_torch(s).items() if k != "op"}
    if getattr(m, "same_pad", False):
        need(fields["padding"] in (0, [0, 0]), f"a ScaledStdConv2dSame with padding {fields['padding']}")
        fields["padding"] = "same"
    gain = getattr(m, "gain", None)
    need(gain is not None and tuple(gain.shape) == (m.out_channels, 1, 1, 1),
         f"a gain of shape {list(getattr(gain, 'shape', []))} (archc's std_conv has one per output channel, "
         f"{m.out_channels} x 1 x 1 x 1)")
    need(isinstance(getattr(m, "scale", None), float) and m.scale > 0, "a scale that is not a positive number")
    fan_in = math.prod(m.weight.shape[1:])
    return {"op": "std_conv", **fields, "gamma": _gamma(m, fan_in), "eps": float(m.eps)}


def _same_stride(a: Attrs) -> bool:
    return a["padding"] == "same" and tuple(a["stride"]) != (1, 1)


def _workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """While it runs: the standardised weight (made once, whatever the batch; the batch norm's mean and 1 / std
    and the gain times the scale are freed before the output is made), and the padded copy of TensorFlow's
    'same' at stride 2."""
    return _weights(a, i) + batch * conv._padded_elements(a, i)


OP = Op(
    layers=(LayerOp(StdConv, _lower),),
    # the standardisation is F.batch_norm over each output channel's fan-in (5 operations per weight, once a
    # call, not per sample: not in the element operations); autograd keeps the convolution's input (or its
    # padded copy) per sample and, once, the standardised weight, the gain times the scale and the batch norm's
    # mean and 1 / std. Measured (tests/test_std_conv.py): the inference peak exactly, a training step within 1%
    kinds=(OpDef(
        KIND, conv._shape, attrs=("out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias",
                                  "gamma", "eps"),
        params=_params, macs=conv._macs, elementwise=lambda a, i, o: 0, window=conv._window, depth="params", patch=kxs,
        batch_workspace=_workspace,
        saves=lambda a, i, o: ((), conv._padded_elements(a, i)) if _same_stride(a) else (("input",), 0),
        saves_once=lambda a, i, o: _weights(a, i) + 3 * a["out_channels"],
        backward_workspace=lambda a, i, o: conv._padded_elements(a, i) - math.prod(i[0]) if _same_stride(a) else 0,
        latency=Latency(("conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise"), conv._kernel),
        channels_last=True,
        torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", shaped_call=_call,
                        helper="archcompiler.backends.torch.runtime:ScaledStdConv2d"),
        style=Style("box", "#dbe9f6", lambda a: f"{a['out_channels']} std")),),
    # timm's classes (ScaledStdConv2dSame pads as TensorFlow does), and archc's own as a built spec holds it
    from_torch={"ScaledStdConv2d": FromTorch(KIND, _from_torch, modules=("timm.layers", "timm.models")),
                "ScaledStdConv2dSame": FromTorch(KIND, _from_torch, modules=("timm.layers", "timm.models"))},
)
