"""LayerNorm over each position's channels of an image, or each token's features (``op: layer_norm``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from ..spec.layers import LayerBase, PosFloat
from . import _onnx
from ._base import (
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Params,
    Style,
    TorchCode,
    elements,
    features,
    image_or_sequence,
    need,
    owns,
    per_map,
    positions,
)

KIND = "layer_norm2d"


class LayerNorm(LayerBase):
    """LayerNorm over an image's channels at each position (ConvNeXt's LayerNorm2d: nn.LayerNorm on
    the channels-last view), over each token's features of a sequence (a transformer's nn.LayerNorm
    over the last dimension) or over a flat vector's (timm's fc_norm after the pool), with a learned
    per-feature scale and shift."""

    op: Literal["layer_norm"]
    eps: PosFloat = 1e-5


def _from_torch(s: Any) -> dict:
    m = s.module
    channels_first = type(m).__name__ == "LayerNorm2d"       # torchvision's ConvNeXt: it permutes inside
    if len(s.shapes[0]) in (1, 2) and not s.arg.get("channels_last"):   # a sequence's tokens, a flat vector
        need(tuple(m.normalized_shape) == (s.shapes[0][-1],) and m.elementwise_affine and m.bias is not None,
             "a LayerNorm without its per-feature weight and bias")
        return {"op": "layer_norm", "eps": m.eps}
    need(channels_first or s.arg.get("channels_last"), "a LayerNorm over other dims than an image's channels "
                                                       "(archc's layer_norm normalises each position's channels)")
    need(tuple(m.normalized_shape) == (s.shapes[0][0],) and m.elementwise_affine and m.bias is not None,
         "a LayerNorm without its per-channel weight and bias")
    return {"op": "layer_norm", "eps": m.eps}


def _functional(s: Any) -> dict:
    """F.layer_norm(x, (C,), self.weight, self.bias, eps) in a module's forward (timm's LayerNorm, and
    LayerNorm2d on x.permute(0, 2, 3, 1)): a layer_norm with the module's parameters."""
    owns(s, "weight", "bias")
    features = s.shapes[0][-1] if len(s.shapes[0]) in (1, 2) and not s.arg.get("channels_last") else s.shapes[0][0]
    need(len(s.shapes[0]) in (1, 2) or s.arg.get("channels_last"),
         "a LayerNorm over other dims than an image's channels (after x.permute(0, 2, 3, 1)), a token's features or "
         "a flat vector's")
    shape = s.arg.get("normalized_shape")
    need(tuple(shape if isinstance(shape, (tuple, list)) else [shape]) == (features,),
         f"a layer norm over {shape} (archc's normalises the {features} features of each position)")
    return {"op": "layer_norm", "eps": float(s.arg.get("eps", 1e-5))}


def _from_onnx(n: Any) -> dict:
    need(n.attrs.get("axis", -1) in (-1, len(n.shapes[0])) and (n.last or len(n.shapes[0]) == 2),
         "a LayerNormalization over other axes than a sequence's features or a channels-last view's channels")
    need(len(n.consts) == 3 and n.consts[1] is not None and n.consts[2] is not None,
         "a LayerNormalization without its scale and bias")
    return {"op": "layer_norm", "eps": _onnx.eps(n)}


_PERMUTED = "{m}({x}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"


def _shape(a: Any, i: list) -> tuple:
    """An image or a sequence, or a flat vector (timm's fc_norm after the average pool)."""
    return i[0] if len(i) == 1 and len(i[0]) == 1 else image_or_sequence("layer_norm", i)


def _positions(o: tuple) -> int:
    return 1 if len(o) == 1 else positions(o)


def _call(a: Any, x: list, m: str, ip: bool, ins: list) -> str:
    return _PERMUTED.format(m=m, x=x[0]) if len(ins[0]) == 3 else f"{m}({x[0]})"

OP = Op(
    layers=(LayerOp(LayerNorm, lambda s: [("", KIND, {"eps": s.eps})]),),
    # ConvNeXt's LayerNorm2d: each position's channels normalised (F.layer_norm over a channels-last view),
    # then a per-channel scale and shift; mean and 1 / std per position kept by autograd (measured: the
    # strided input is read as it is, not copied); over a sequence, each token's D features
    kinds=(OpDef(
        KIND, _shape, attrs=("eps",),
        params=lambda a, i, o: Params(features(o), features(o)),
        elementwise=lambda a, i, o: 5 * math.prod(o), workspace=lambda a, i, o: 2 * _positions(o),
        saves=lambda a, i, o: (("input",), 2 * _positions(o)),
        latency=per_map(("batch_norm",), lambda a: "batch_norm", elements),
        torch=TorchCode(lambda a, ins, out: f"nn.LayerNorm({features(out)}, eps={a['eps']})",
                        lambda a, x, m, ip: _PERMUTED.format(m=m, x=x[0]),
                        sequence_call=lambda a, x, m, ip: f"{m}({x[0]})", shaped_call=_call),
        style=Style("box", "#f2e6f7")),),
    from_torch={"LayerNorm": FromTorch(KIND, _from_torch), "LayerNorm2d": FromTorch(KIND, _from_torch),
                "fn:layer_norm": FromTorch(KIND, _functional, ("normalized_shape", "weight", "bias", "eps"))},
    from_onnx={"LayerNormalization": FromOnnx(_from_onnx, {1: "weight", 2: "bias"})},
)
