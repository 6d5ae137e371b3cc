"""The Fourier position encoding of a map's grid through a learned 1 x 1 convolution (``op: fourier_position``:
EdgeNeXt's ``PositionalEncodingFourier``, DETR's sine encoding projected)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from ..spec.layers import LayerBase, PosFloat, PosInt
from ._base import (
    MEMORY,
    Attrs,
    FromTorch,
    Kernel,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Params,
    Shape,
    Style,
    TorchCode,
    image,
    need,
)

KIND = "fourier_position"
RUNTIME = "archcompiler.backends.torch.runtime:FourierPosition"


class FourierPosition(LayerBase):
    """The Fourier encoding of the positions of the map it reads (read for its height and width alone: a
    constant of the grid, no parameters of its own), through a learned 1 x 1 convolution: `dim` x H x W, to be
    added to the map or its tokens (EdgeNeXt's `pos_embd`). Each position's row and column, counted from 1 and
    scaled to (0, 2 pi], over temperature^(2 floor(i / 2) / hidden_dim), i < hidden_dim: the even features' sine,
    the odd ones' cosine, the rows' features then the columns'; laid out as timm's `PositionalEncodingFourier`
    (`token_projection`: 2 hidden_dim -> dim). Its size follows the input's."""

    op: Literal["fourier_position"]
    dim: PosInt | None = Field(None, description="the encoding's channels (the projection's output); default: the "
                                                 "channels of the map it reads")
    hidden_dim: PosInt = Field(32, description="the Fourier features of each axis (even: sine and cosine pairs); "
                                               "the projection reads 2 hidden_dim channels")
    temperature: PosFloat = Field(10000.0, description="the base of the features' wavelengths (timm's temperature)")

    @field_validator("hidden_dim")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"hidden_dim {v} is odd: the features are sine and cosine pairs")
        return v


def _lower(s: FourierPosition) -> list:
    return [("", KIND, {"dim": s.dim, "hidden_dim": s.hidden_dim, "temperature": s.temperature})]


def _channels(a: Attrs, i: list[Shape]) -> int:
    return a["dim"] if a["dim"] is not None else i[0][0]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    return (_channels(a, shapes), h, w)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """The projection: 2 hidden_dim x dim weights and dim biases."""
    return Params(2 * a["hidden_dim"] * o[0], o[0])


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The projection at each of the H x W positions (computed once for the batch: the encoding is every
    sample's)."""
    return 2 * a["hidden_dim"] * math.prod(o)


def _batch_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """Beyond its input and output (measured: tests/test_edgenext.py). The encoding is made once for the batch:
    the wavelengths (hidden_dim) and each axis's features (hidden_dim x H, hidden_dim x W), kept to the end;
    the features of the grid (2 hidden_dim x H x W) and their projection (dim x H x W), which at a batch of one
    is the output itself and otherwise is copied to each sample (while the projection runs, the output is not
    made yet)."""
    h, (_, rows, cols) = a["hidden_dim"], o
    kept, features, once = h * (rows + cols + 1), 2 * h * rows * cols, math.prod(o)
    if batch == 1:
        return kept + features
    return kept + max(features + once - batch * once, once)


def _saves_once(a: Attrs, i: list[Shape], o: Shape) -> int:
    """What autograd keeps, once per forward: the projection's input, the features (measured:
    tests/test_edgenext.py)."""
    return 2 * a["hidden_dim"] * o[1] * o[2]


def _from_torch(s: Any) -> dict:
    """timm's PositionalEncodingFourier (a leaf of the trace, read in timm's EdgeNeXt, called on the sizes of
    the map it encodes) and archc's own FourierPosition: a 1 x 1 projection with bias from 2 hidden_dim
    channels, the positions scaled to 2 pi."""
    m = s.module
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3 and len(s.shape) == 3 and s.shape[1:] == s.shapes[0][1:],
         "a position encoding of other than the grid of one map it reads")
    hidden, conv = int(m.hidden_dim), m.token_projection
    need(hidden % 2 == 0 and conv.in_channels == 2 * hidden and tuple(conv.kernel_size) == (1, 1)
         and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0) and conv.groups == 1
         and conv.bias is not None, "a projection other than a 1 x 1 convolution with bias from 2 hidden_dim "
                                    f"channels (archc's {KIND})")
    scale = float(getattr(m, "scale", 2 * math.pi))
    need(abs(scale - 2 * math.pi) < 1e-12, f"positions scaled to {scale} (archc's {KIND} scales them to 2 pi)")
    out: dict = {"op": KIND}
    if conv.out_channels != s.shapes[0][0]:
        out["dim"] = int(conv.out_channels)
    if hidden != 32:
        out["hidden_dim"] = hidden
    if float(m.temperature) != 10000.0:
        out["temperature"] = float(m.temperature)
    return out


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return f"FourierPosition({a['hidden_dim']}, {out[0]}, {a['temperature']!r})"


def _detail(a: Attrs) -> str:
    return f"Fourier, {a['hidden_dim']} per axis"


OP = Op(
    layers=(LayerOp(FourierPosition, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("dim", "hidden_dim", "temperature"), params=_params, macs=_macs,
                 batch_workspace=_batch_workspace, saves_once=_saves_once,
                 latency=Latency(("conv1x1", MEMORY), lambda a, i, o: Kernel("conv1x1", (2 * a["hidden_dim"], o[0], o[1]),
                                                                           _macs(a, i, o))),
                 shape_inputs=lambda a: (0,),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fff2cc", _detail)),),
    # timm's module (a leaf of the trace: its class in timm's EdgeNeXt) and archc's own in a module it generated
    from_torch={"PositionalEncodingFourier": FromTorch(KIND, _from_torch, modules=("timm.models.edgenext",)),
                "FourierPosition": FromTorch(KIND, _from_torch)},
)
