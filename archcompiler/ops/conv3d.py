"""3-D convolution over a clip (C x T x H x W), optionally followed by a batch norm and an activation
(``op: conv3d``): the convolutions of torchvision's video ResNets (R3D, MC3, R(2+1)D)."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import Field

from ..spec.layers import Bool, LayerBase, NonNegInt, PosInt
from ._base import (
    Attrs,
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
    TooSmall,
    TorchCode,
    Window,
    fmt,
    out_size,
)
from .activation import Activation, lower_act
from .batch_norm import KIND as BATCH_NORM
from .batch_norm import BatchNormSpec, attrs_of

KIND = "conv3d"

Triple = Union[PosInt, Annotated[list[PosInt], Field(min_length=3, max_length=3)]]
NonNegTriple = Union[NonNegInt, Annotated[list[NonNegInt], Field(min_length=3, max_length=3)]]


def triple(value: int | list[int] | tuple[int, ...]) -> tuple[int, int, int]:
    """``3`` -> ``(3, 3, 3)``; ``[1, 3, 3]`` -> ``(1, 3, 3)`` (time, height, width)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1]), int(value[2])
    return int(value), int(value), int(value)


class Conv3d(LayerBase):
    """3-D convolution over a clip (C x T x H x W: nn.Conv3d), optionally followed by a normalisation (BatchNorm3d)
    and an activation. Its kernel, stride, padding and dilation are one number or [t, h, w]: [3, 3, 3] is
    R3D's, [1, 3, 3] a spatial convolution of each frame (MC3's Conv3DNoTemporal, the (2+1)D's first half) and
    [3, 1, 1] a temporal one (the (2+1)D's second half)."""

    op: Literal["conv3d"]
    out: PosInt = Field(description="output channels")
    kernel: Triple = Field(description="kernel size: one number or [t, h, w]")
    stride: Triple = Field(1, description="stride: one number or [t, h, w]")
    padding: NonNegTriple = Field(0, description="zeros on each side: one number or [t, h, w]")
    dilation: Triple = Field(1, description="dilation: one number or [t, h, w]")
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


def _lower(s: Conv3d) -> list[Prim]:
    conv = {"out_channels": s.out, "kernel": triple(s.kernel), "stride": triple(s.stride),
            "padding": triple(s.padding), "dilation": triple(s.dilation), "groups": s.groups, "bias": s.has_bias()}
    norm = s.norm_spec()
    if norm is None:
        return [("", KIND, conv), *lower_act(s.act)]
    return [("/conv", KIND, conv), ("/bn", BATCH_NORM, attrs_of(norm.eps, norm.momentum)), *lower_act(s.act)]


def clip(kind: str, shapes: list[Shape]) -> Shape:
    """The one input of an op over a clip, ``(C, T, H, W)``."""
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    s = shapes[0]
    if len(s) != 4:
        what = {3: "an image", 2: "a sequence", 1: "a flat"}.get(len(s), "a")
        raise ShapeError(f"{kind} needs a clip (T x H x W x C) input, got {what} {fmt(s)}")
    return s


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, *size = clip("conv3d", shapes)
    if c % a["groups"] or a["out_channels"] % a["groups"]:
        raise ShapeError(f"groups={a['groups']} must divide both the input channels ({c}) and the "
                         f"output channels ({a['out_channels']})")
    out = [out_size(n, k, s, p, p, d) for n, k, s, p, d in
           zip(size, a["kernel"], a["stride"], a["padding"], a["dilation"])]
    if min(out) < 1:
        raise TooSmall(f"output would be {'x'.join(map(str, out))}: the {'x'.join(map(str, size))} input is too "
                       f"small for kernel {'x'.join(map(str, a['kernel']))}, stride {'x'.join(map(str, a['stride']))}")
    return (a["out_channels"], *out)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    return Params(a["out_channels"] * (i[0][0] // a["groups"]) * math.prod(a["kernel"]),
                  a["out_channels"] if a["bias"] else 0)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * (i[0][0] // a["groups"]) * math.prod(a["kernel"])


def _window(a: Attrs, i: list[Shape]) -> Window:
    """Over height and width (the receptive field is a frame's pixels; time is not in it)."""
    return Window(tuple(a["kernel"][1:]), tuple(a["stride"][1:]), tuple(a["padding"][1:]), tuple(a["dilation"][1:]))


def _kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    """No profile measures a 3-D convolution: timed like the 2-D one of its spatial kernel (its work the MACs)."""
    k = max(a["kernel"][1:])
    return Kernel({1: "conv1x1", 3: "conv3x3"}.get(k, "conv7x7s2" if k >= 7 else "conv5x5"),
                  (i[0][0], a["out_channels"], i[0][2]), _macs(a, i, o))


def _t3(v: tuple) -> str:
    return f"({v[0]}, {v[1]}, {v[2]})"


def _module(a: Attrs, ins: list, out: tuple) -> str:
    extra = ""
    if tuple(a["dilation"]) != (1, 1, 1):
        extra += f", dilation={_t3(a['dilation'])}"
    if a["groups"] != 1:
        extra += f", groups={a['groups']}"
    return (f"nn.Conv3d({ins[0][0]}, {a['out_channels']}, kernel_size={_t3(a['kernel'])}, "
            f"stride={_t3(a['stride'])}, padding={_t3(a['padding'])}{extra}, bias={a['bias']})")


def _patch(a: Attrs) -> str:
    """The patch size / stride column: ``3x7x7/1x2x2``."""
    return f"{'x'.join(map(str, a['kernel']))}/{'x'.join(map(str, a['stride']))}"


OP = Op(
    layers=(LayerOp(Conv3d, _lower, main=KIND),),
    kinds=(OpDef(
        KIND, _shape, attrs=("out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias"),
        params=_params, macs=_macs, elementwise=lambda a, i, o: 0, window=_window, depth="params", patch=_patch,
        saves=lambda a, i, o: (("input",), 0),
        latency=Latency(("conv1x1", "conv3x3", "conv5x5", "conv7x7s2"), _kernel),
        torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})"),
        style=Style("box", "#dbe9f6", lambda a: str(a["out_channels"]))),),
)
