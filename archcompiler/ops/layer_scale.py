"""A learned per-channel scale of a residual branch (ConvNeXt's ``layer_scale``; CaiT's LayerScale)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, PosFloat
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Params,
    Shape,
    Style,
    TorchCode,
    elements,
    features,
    image_or_sequence,
    need,
    per_map,
)

KIND = "layer_scale"


class LayerScale(LayerBase):
    """A learned per-channel scale that multiplies the map: a C x 1 x 1 parameter (ConvNeXt's residual
    branch, torchvision's ``layer_scale``), or a vector of C (``flat``: timm's ``gamma``); on a sequence of
    tokens, a vector of D that scales each token's features (CaiT's and timm's LayerScale, ``ls1``)."""

    op: Literal["layer_scale"]
    init: PosFloat = Field(1e-6, description="the scale's initial value (ConvNeXt: 1e-6)")
    flat: Bool = Field(False, description="on an image, the scale is held as a vector of C (timm's gamma) "
                                          "instead of C x 1 x 1 (torchvision's)")


def _vector(a: Attrs, shape: tuple) -> bool:
    return len(shape) == 2 or a["flat"]


def _module(a: Attrs, ins: list, out: tuple) -> str:
    size = f"{features(out)}," if _vector(a, out) else f"{out[0]}, 1, 1"
    return f"nn.Parameter(torch.full(({size}), {a['init']!r}))"


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    return f"{m}.view(-1, 1, 1) * {x[0]}" if a["flat"] else f"{m} * {x[0]}"


def _from_torch(s: Any) -> dict:
    """A parameter of the traced module times a layer's output: C x 1 x 1 (or C, reshaped) on an image, D on
    a sequence of tokens."""
    shape, tensor = tuple(s.arg.get("param_shape", ())), s.shapes[0]
    if len(tensor) == 2:
        need(shape == (tensor[1],), f"a parameter of shape {list(shape)} times a sequence {list(tensor)}")
        return {"op": KIND}
    need(len(tensor) == 3 and shape in ((tensor[0], 1, 1), (tensor[0],)),
         f"a parameter of shape {list(shape)} times a map {list(tensor)} (archc's layer_scale is one scale per channel)")
    return {"op": KIND, **({"flat": True} if shape == (tensor[0],) else {})}


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    return image_or_sequence(KIND, shapes)


OP = Op(
    layers=(LayerOp(LayerScale, lambda s: [("", KIND, {"init": s.init, "flat": s.flat})]),),
    kinds=(OpDef(
        KIND, _shape, attrs=("init", "flat"), params=lambda a, i, o: Params(features(o)),
        # the module's attribute is the parameter itself (no submodule): its path is a state_dict key
        torch=TorchCode(_module, _call),
        style=Style("box", "#f5f5f5"),
        # its gradient is computed at the map's size before it is summed down to C x 1 x 1
        saves=lambda a, i, o: (("input",), 0), backward_workspace=lambda a, i, o: math.prod(o),
        latency=per_map(("add",), lambda a: "add", elements)),),
    # a C x 1 x 1 parameter of the traced module times a map (torch), a C x 1 x 1 initializer times one (ONNX)
    from_torch={"param:mul": FromTorch(KIND, _from_torch), "param:mul_": FromTorch(KIND, _from_torch)},
    from_onnx={"param:Mul": FromOnnx(lambda n: {"op": KIND})},
)
