"""A learned per-channel scale of a residual branch (ConvNeXt's ``layer_scale``; CaiT's LayerScale)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosFloat
from ._base import FromOnnx, FromTorch, LayerOp, Op, OpDef, Params, Style, TorchCode, channels_same, elements, per_map

KIND = "layer_scale"


class LayerScale(LayerBase):
    """A learned per-channel scale, a C x 1 x 1 parameter that multiplies the map (ConvNeXt's
    residual branch, torchvision's ``layer_scale``)."""

    op: Literal["layer_scale"]
    init: PosFloat = Field(1e-6, description="the scale's initial value (ConvNeXt: 1e-6)")


OP = Op(
    layers=(LayerOp(LayerScale, lambda s: [("", KIND, {"init": s.init})]),),
    kinds=(OpDef(
        KIND, channels_same(KIND), attrs=("init",), params=lambda a, i, o: Params(o[0]),
        # the module's attribute is the parameter itself (no submodule): its path is a state_dict key
        torch=TorchCode(lambda a, ins, out: f"nn.Parameter(torch.full(({out[0]}, 1, 1), {a['init']!r}))",
                        lambda a, x, m, ip: f"{m} * {x[0]}"),
        style=Style("box", "#f5f5f5"),
        # its gradient is computed at the map's size before it is summed down to C x 1 x 1
        saves=lambda a, i, o: (("input",), 0), backward_workspace=lambda a, i, o: math.prod(o),
        latency=per_map(("add",), lambda a: "add", elements)),),
    # a C x 1 x 1 parameter of the traced module times a map (torch), a C x 1 x 1 initializer times one (ONNX)
    from_torch={"param:mul": FromTorch(KIND, lambda s: {"op": KIND})},
    from_onnx={"param:Mul": FromOnnx(lambda n: {"op": KIND})},
)
