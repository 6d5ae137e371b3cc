"""Global response normalisation (ConvNeXt V2, Woo et al. 2023; ``op: grn``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosFloat
from . import _onnx
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
    channels_same,
    elements,
    need,
    per_map,
)

KIND = "grn"


class GRN(LayerBase):
    """Global response normalisation (ConvNeXt V2; timm's GlobalResponseNorm): each channel's L2 norm over
    the positions, over the mean of those norms across the channels, scales the map; a learned per-channel
    weight times that, plus a learned bias, is added to the input: x + weight * (x * N(x)) + bias."""

    op: Literal["grn"]
    eps: PosFloat = Field(1e-6, description="added to the mean of the channels' norms (timm: 1e-6)")


def _from_torch(s: Any) -> dict:
    """timm's GlobalResponseNorm (channels-first on the map, or channels-last after x.permute(0, 2, 3, 1), as
    ConvNeXt V2's MLP runs it) and archc's own: its ``weight`` and ``bias`` are the layer's."""
    m, last = s.module, bool(s.arg.get("channels_last"))
    need(len(s.shapes[0]) == 3, "a GlobalResponseNorm of other than an image (archc's grn reads C x H x W maps)")
    spatial, channel = tuple(getattr(m, "spatial_dim", (2, 3))), getattr(m, "channel_dim", 1)
    need((spatial, channel) == (((1, 2), -1) if last else ((2, 3), 1)),
         f"a GlobalResponseNorm over dims {list(spatial)} with its channels at dim {channel} on a "
         f"{'channels-last' if last else 'channels-first'} map")
    c = s.shapes[0][0]
    need(tuple(m.weight.shape) == tuple(m.bias.shape) == (c,),
         f"a weight and bias of shapes {list(m.weight.shape)} and {list(m.bias.shape)} for {c} channels")
    return {"op": "grn", "eps": float(m.eps)}


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    return Params(o[0], o[0])


OP = Op(
    layers=(LayerOp(GRN, lambda s: [("", KIND, {"eps": s.eps})]),),
    # x.norm over H and W (a square and a sum per element), x * N(x), the addcmul (2) and the sum with the input:
    # 6 operations per element (the per-channel norms and their mean are C per sample). Measured
    # (tests/test_grn.py): while it runs, the product x * N(x) (a map) and the norms and the scale N(x) (C each)
    # are alive beside its input and output; autograd keeps the input, that product (addcmul's backward reads
    # it) and the norms, the scale and the denominator (C, C and 1)
    kinds=(OpDef(
        KIND, channels_same(KIND), attrs=("eps",), params=_params,
        elementwise=lambda a, i, o: 6 * math.prod(o),
        workspace=lambda a, i, o: math.prod(o) + 2 * o[0],
        saves=lambda a, i, o: (("input",), math.prod(o) + 2 * o[0] + 1),
        backward_workspace=lambda a, i, o: math.prod(o),
        latency=per_map(("batch_norm",), lambda a: "batch_norm", elements),
        torch=TorchCode(lambda a, ins, out: f"GlobalResponseNorm({out[0]}, eps={a['eps']!r})",
                        lambda a, x, m, ip: f"{m}({x[0]})",
                        helper="archcompiler.backends.torch.runtime:GlobalResponseNorm"),
        style=Style("box", "#f2e6f7")),),
    # timm's class, and archc's own as a built spec holds it (runtime.py's, read by the importer as archc's)
    from_torch={"GlobalResponseNorm": FromTorch(KIND, _from_torch, modules=("timm.layers", "timm.models"))},
    # the ONNX reader's pattern (importers/onnx/layouts.py): ReduceL2, ReduceMean, the division, the addcmul
    from_onnx={"pattern:grn": FromOnnx(lambda n: {"op": KIND, "eps": _onnx.eps(n)})},
)
