"""Fully connected layers (``op: linear``): over a flat vector, each token, or each position's channels."""

from __future__ import annotations

import math
from typing import Any, Literal

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
    Prim,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    fmt,
    image,
    need,
    owns,
)
from .activation import Activation, lower_act
from .flatten import KIND as FLATTEN

KIND = "linear"
OVER_CHANNELS = "channel_linear"


class Linear(LayerBase):
    """Fully connected layer; a C x H x W input is flattened first, or, with ``over: channels``, the
    same Linear maps each position's channels (ConvNeXt's pointwise layers: nn.Linear on a
    channels-last image) and the output is an image of ``out`` channels; with ``over: tokens`` it maps
    each token of a sequence (a transformer's MLP: S x D to S x out)."""

    op: Literal["linear"]
    out: PosInt = Field(description="output features")
    bias: Bool = True
    act: Activation = "none"
    over: Literal["flat", "channels", "tokens"] = Field(
        "flat", description="flat: the input flattened first; channels: each position's channels (an image stays "
                            "one); tokens: each token's features (a sequence stays one)")


def _lower(s: Linear) -> list[Prim]:
    attrs = {"out_features": s.out, "bias": s.bias}
    if s.over == "channels":
        return [("", OVER_CHANNELS, attrs), *lower_act(s.act)]
    if s.over == "tokens":
        return [("", KIND, attrs), *lower_act(s.act)]
    return [("/flatten", FLATTEN, {}), ("", KIND, attrs), *lower_act(s.act)]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """A flat ``(F,)`` to ``(out,)``; a sequence ``(S, D)`` to ``(S, out)`` (each token's features,
    as nn.Linear maps the last dimension)."""
    if len(shapes) == 1 and len(shapes[0]) == 2:
        return (shapes[0][0], a["out_features"])
    if len(shapes) != 1 or len(shapes[0]) != 1:
        raise ShapeError(f"linear needs a flat input or a sequence, got {', '.join(fmt(s) for s in shapes)}")
    return (a["out_features"],)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o[:-1]) * i[0][-1] * a["out_features"]


def _kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    """A Linear on a flat vector is the calibrated ``linear``; over a sequence's tokens it is a
    matrix product, (S x D) times (D x out): the calibrated ``matmul``, looked up by D, out and S."""
    if len(o) == 2:
        return Kernel("matmul", (i[0][-1], a["out_features"], o[0]), _macs(a, i, o))
    return Kernel("linear", (i[0][0], a["out_features"], 1), _macs(a, i, o))


def _channels_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    _, h, w = image("a linear over channels", shapes)
    return (a["out_features"], h, w)


def _channels_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * i[0][0]       # one Linear per position: H x W x C_in x C_out


def _channels_kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    """A Linear over each position's channels is a 1x1 convolution's work: timed like one."""
    c, h, _ = i[0]
    return Kernel("conv1x1", (c, a["out_features"], h), _channels_macs(a, i, o))


def _from_torch(s: Any) -> dict:
    fields = {"op": "linear", "out": s.module.out_features, "bias": s.module.bias is not None}
    if len(s.shapes[0]) == 2 and not s.arg.get("channels_last"):      # a sequence: each token's features
        return {**fields, "over": "tokens"}
    if s.arg.get("channels_last"):          # x.permute(0, 2, 3, 1) before it: over each position's channels
        return {**fields, "over": "channels"}
    need(len(s.shapes[0]) == 1, f"a Linear over a {len(s.shapes[0]) + 1}-d tensor (archc's linear reads a "
                                "flat vector, or an image's channels after x.permute(0, 2, 3, 1))")
    return fields


def _functional(s: Any) -> dict:
    """F.linear(x, self.weight, self.bias) in a module's forward."""
    owns(s, "weight")
    need(set(s.arg["own"]) <= {"weight", "bias"}, "a linear with other parameters than its weight and bias")
    weight = s.module.weight
    fields = {"op": "linear", "out": int(weight.shape[0]), "bias": "bias" in s.arg["own"]}
    if len(s.shapes[0]) == 2 and not s.arg.get("channels_last"):
        return {**fields, "over": "tokens"}
    if s.arg.get("channels_last"):
        return {**fields, "over": "channels"}
    need(len(s.shapes[0]) == 1, "a linear over a map's last axis")
    return fields


def _gemm(n: Any) -> dict:
    need(n.attrs.get("alpha", 1.0) == 1.0 and n.attrs.get("beta", 1.0) == 1.0 and not n.attrs.get("transA", 0),
         "alpha, beta or transA")
    w = n.consts[1]
    need(w is not None and len(n.shapes[0]) == 1, "a product with a computed matrix")
    need(w.ndim == 2 and min(w.shape) >= 1, f"a weight of shape {list(w.shape)}")
    out, features = (w.shape[0], w.shape[1]) if n.attrs.get("transB", 0) else (w.shape[1], w.shape[0])
    need(n.shapes[0][0] < 1 or features == n.shapes[0][0],
         f"a weight of shape {list(w.shape)} reads {features} features, but its input has {n.shapes[0][0]}")
    return {"op": "linear", "out": int(out), "bias": len(n.consts) > 2}


def _matmul(n: Any) -> dict:
    """A Linear without bias (the importer takes the bias Add after it): on a flat vector, each token of a
    sequence, or each position's channels of a channels-last view."""
    w = n.consts[1]
    need(w is not None and w.ndim == 2 and n.consts[0] is None, "a product with a computed matrix")
    over = "channels" if n.last else {1: "flat", 2: "tokens"}.get(len(n.shapes[0]))
    need(over is not None, "a product over an image's last axis (archc's linear maps a vector, a token's features "
                           "or a channels-last view's channels)")
    return {"op": "linear", "out": int(w.shape[1]), "bias": False, **({"over": over} if over != "flat" else {})}


def _bias(a: Attrs) -> int:
    return a["out_features"] if a["bias"] else 0


def _saves_input(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    return ("input",), 0


_GREEN = "#d9f0d3"

OP = Op(
    layers=(LayerOp(Linear, _lower, main=KIND),),
    kinds=(
        OpDef(KIND, _shape, attrs=("out_features", "bias"),
              params=lambda a, i, o: Params(i[0][-1] * a["out_features"], _bias(a)), depth="params",
              macs=_macs, elementwise=lambda a, i, o: 0, saves=_saves_input,
              latency=Latency(("linear", "matmul"), _kernel),
              torch=TorchCode(lambda a, ins, out: f"nn.Linear({ins[0][-1]}, {a['out_features']}, bias={a['bias']})",
                              lambda a, x, m, ip: f"{m}({x[0]})"),
              style=Style("box", _GREEN, lambda a: str(a["out_features"]))),
        # ConvNeXt's pointwise layers: nn.Linear over each position's channels (torchvision permutes to
        # channels-last and back); a copy of the input where it is not channels-last already
        OpDef(OVER_CHANNELS, _channels_shape, attrs=("out_features", "bias"),
              params=lambda a, i, o: Params(i[0][0] * a["out_features"], _bias(a)),
              macs=_channels_macs, elementwise=lambda a, i, o: 0, depth="params", saves=_saves_input,
              latency=Latency(("conv1x1",), _channels_kernel), channels_last=True,
              torch=TorchCode(lambda a, ins, out: f"nn.Linear({ins[0][0]}, {a['out_features']}, bias={a['bias']})",
                              lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"),
              style=Style("box", _GREEN, lambda a: f"{a['out_features']} per position")),
    ),
    from_torch={"Linear": FromTorch(KIND, _from_torch), "fn:linear": FromTorch(KIND, _functional, ("weight", "bias"))},
    from_onnx={"Gemm": FromOnnx(_gemm, {1: "weight", 2: "bias"}), "MatMul": FromOnnx(_matmul, {1: "weight"})},
)
