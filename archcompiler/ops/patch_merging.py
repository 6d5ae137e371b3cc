"""Swin's patch merging (``op: patch_merging``): 2 x 2 neighbours concatenated, normalised and reduced."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosFloat, PosInt
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
    Style,
    TorchCode,
    Window,
    image,
    need,
)

KIND = "patch_merging"
RUNTIME = "archcompiler.backends.torch.runtime:PatchMerging"


class PatchMerging(LayerBase):
    """Swin's patch merging: each 2 x 2 group of positions concatenated (4C channels at half the
    height and width, an odd side padded with zeros as torchvision does), then a LayerNorm and a
    Linear to ``out`` channels without bias (torchvision's ``reduction`` and ``norm``); ``norm:
    after`` normalises the ``out`` channels after the Linear instead (Swin V2)."""

    op: Literal["patch_merging"]
    out: PosInt | None = Field(None, description="output channels (default: twice the input's)")
    norm: Literal["before", "after"] = Field("before", description="the LayerNorm before the reduction "
                                                                   "(Swin) or after it (Swin V2)")
    eps: PosFloat = 1e-5


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image("patch_merging", shapes)
    return (a["out_channels"] or 2 * c, (h + 1) // 2, (w + 1) // 2)


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Measured (tests/test_swin.py): the 4C x H/2 x W/2 concatenation Q lives through the module;
    before the reduction the LayerNorm's output (Q) and its mean and 1 / std per position; after it,
    the reduction's output and the norm's statistics; the padded copy (Q: F.pad copies, odd sides or
    not, as in torchvision) while it is cut."""
    q, y, positions = 4 * i[0][0] * o[1] * o[2], math.prod(o), o[1] * o[2]
    padded = 2 * q - y
    if a["norm"] == "before":
        return max(2 * q + max(0, 2 * positions - y), padded)
    return max(q + y + 2 * positions, padded)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    c, out = i[0][0], o[0]
    norm = 4 * c if a["norm"] == "before" else out
    return Params(4 * c * out + norm, norm)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * 4 * i[0][0]


def _from_torch(s: Any) -> dict:
    """torchvision's PatchMerging (the LayerNorm before the reduction) and PatchMergingV2 (after it), timm's
    Swin's and archc's own, told apart by the LayerNorm's size."""
    m = s.module
    out_ch = m.reduction.out_features
    norm = m.norm
    need(m.reduction.bias is None and type(norm).__name__ == "LayerNorm" and norm.elementwise_affine
         and norm.bias is not None and tuple(norm.normalized_shape) in ((out_ch,), (m.reduction.in_features,)),
         "patch merging other than torchvision's (a Linear without bias and a LayerNorm)")
    out = {"op": KIND, "out": out_ch, "eps": norm.eps}
    if tuple(norm.normalized_shape) == (out_ch,):
        out["norm"] = "after"
    return out


OP = Op(
    layers=(LayerOp(PatchMerging, lambda s: [("", KIND, {"out_channels": s.out, "norm": s.norm, "eps": s.eps})]),),
    # 2 x 2 neighbours concatenated (4C), LayerNorm and a Linear (or V2: the Linear, then the LayerNorm);
    # timed like the 1x1 convolution it is
    kinds=(OpDef(
        KIND, _shape, attrs=("out_channels", "norm", "eps"), params=_params, macs=_macs,
        elementwise=lambda a, i, o: 5 * math.prod(o) * (4 * i[0][0] // o[0] if a["norm"] == "before" else 1),
        depth="params", window=lambda a, i: Window((2, 2), (2, 2), (0, 0)), patch=lambda a: "2x2/2",
        workspace=_workspace, saves=lambda a, i, o: (("input",), 2 * math.prod(i[0])),
        latency=Latency(("conv1x1",), lambda a, i, o: Kernel("conv1x1", (4 * i[0][0], o[0], o[1]), _macs(a, i, o))),
        torch=TorchCode(lambda a, ins, out: f"PatchMerging({ins[0][0]}, {out[0]}, {a['norm'] == 'after'}, {a['eps']!r})",
                        lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)", RUNTIME),
        style=Style("box", "#dbe9f6", lambda a: "2x2 merged")),),
    # torchvision's, archc's own and timm's Swin's (its 2 x 2 quarters concatenated in torchvision's order:
    # reshape(B, H / 2, 2, W / 2, 2, C).permute(0, 1, 3, 4, 2, 5) puts the row offset innermost)
    from_torch={"PatchMerging": FromTorch(KIND, _from_torch, modules=("torch.nn", "torchvision",
                                                                      "timm.models.swin_transformer")),
                "PatchMergingV2": FromTorch(KIND, _from_torch)},
    # the importer's pattern of the exporters' nodes (its out, eps and norm given)
    from_onnx={"pattern:merge": FromOnnx(lambda n: {"op": KIND, **n.attrs})},
)
