"""ViT's patch embedding (``op: patch_embed``): an image becomes a sequence of tokens."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, PosInt
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
    Window,
    fmt,
    image,
    t2,
)

KIND = "patch_embed"


class PatchEmbed(LayerBase):
    """ViT's patch embedding: the image cut into ``patch`` x ``patch`` patches, each mapped to ``out``
    features (torchvision's ``conv_proj``, a p x p convolution of stride p, flattened and transposed):
    a C x H x W image becomes a sequence of (H / p) x (W / p) tokens of ``out`` features."""

    op: Literal["patch_embed"]
    out: PosInt = Field(description="features per token (ViT's hidden size D)")
    patch: PosInt = Field(description="the patch's side in pixels; it must divide the image's height and width")
    bias: Bool = True


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """A p x p, stride p convolution to D channels, its map flattened into (H / p) x (W / p) tokens of D
    features; the patch must tile the image (torchvision asserts it)."""
    c, h, w = image(KIND, shapes)
    p = a["patch"]
    if h % p or w % p:
        raise ShapeError(f"patch {p}x{p} does not tile the image {fmt(shapes[0])}: {h}x{w} is not a multiple of {p}")
    return ((h // p) * (w // p), a["out_channels"])


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * i[0][0] * a["patch"] ** 2


def _from_conv(conv: dict) -> dict:
    return {"op": KIND, "out": conv["out"], "patch": conv["kernel"], "bias": conv["bias"]}


def _module(a: Attrs, ins: list, out: tuple) -> str:
    p = t2((a["patch"],) * 2)
    return f"nn.Conv2d({ins[0][0]}, {a['out_channels']}, kernel_size={p}, stride={p}, bias={a['bias']})"


OP = Op(
    layers=(LayerOp(PatchEmbed, lambda s: [("", KIND, {"out_channels": s.out, "patch": s.patch, "bias": s.bias})]),),
    # torchvision's conv_proj, then flatten(2).transpose(1, 2): the tokens are a view of the conv's map
    kinds=(OpDef(
        KIND, _shape, attrs=("out_channels", "patch", "bias"),
        params=lambda a, i, o: Params(a["out_channels"] * i[0][0] * a["patch"] ** 2, a["out_channels"] if a["bias"] else 0),
        macs=_macs, elementwise=lambda a, i, o: 0, depth="params",
        window=lambda a, i: Window((a["patch"],) * 2, (a["patch"],) * 2, (0, 0)),
        patch=lambda a: f"{a['patch']}x{a['patch']}/{a['patch']}", saves=lambda a, i, o: (("input",), 0),
        latency=Latency(("conv7x7s2",), lambda a, i, o: Kernel("conv7x7s2", (i[0][0], a["out_channels"], i[0][1]),
                                                               _macs(a, i, o))),
        torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]}).flatten(2).transpose(1, 2)"),
        style=Style("box", "#dbe9f6", lambda a: f"{a['out_channels']} per patch")),),
    # the importers' pattern: a p x p convolution of stride p (its fields given) whose map is flattened
    # and transposed to tokens
    from_torch={"pattern:patches": FromTorch(KIND, lambda s: _from_conv(s.arg))},
    from_onnx={"pattern:patches": FromOnnx(lambda n: _from_conv(n.attrs))},
)
