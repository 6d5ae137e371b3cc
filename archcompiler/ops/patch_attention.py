"""MobileViT's attention among the positions of a map that share their offset within p x p patches
(``op: patch_attention``), laid out as timm's ``Attention``."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, PosInt, Rate
from ._base import (
    Attrs,
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
    fmt,
    image,
    need,
)
from .self_attention import OP as SELF_ATTENTION

KIND = "patch_attention"
RUNTIME = "archcompiler.backends.torch.runtime:PatchAttention"


class PatchAttention(LayerBase):
    """Multi-head self-attention over an image's positions in ``patch`` x ``patch`` patches, as MobileViT's
    transformer computes it: each of the patch^2 offsets within a patch gathers the (H / patch) x (W / patch)
    positions at that offset (positions ``patch`` apart across the map) into one sequence, which attends among
    itself (no position bias), and the result is folded back to the map. Laid out as timm's ``Attention``
    (``qkv``, ``proj``), so timm's MobileViT keys load; the layer norms and MLP around it in MobileViT's
    transformer are per-position ops on the map (`layer_norm`, `linear` with `over: channels`). The patch
    must tile the map and ``heads`` divide its channels."""

    op: Literal["patch_attention"]
    heads: PosInt = Field(description="attention heads; each attends over channels / heads features")
    patch: PosInt = Field(description="the patch's side in positions (MobileViT: 2); each sequence holds the "
                                      "positions this far apart, (H / patch) x (W / patch) of them")
    qkv_bias: Bool = Field(True, description="a bias on the qkv projection (timm's qkv_bias; MobileViT has one)")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")


def _lower(s: PatchAttention) -> list:
    return [("", KIND, {"heads": s.heads, "patch": s.patch, "qkv_bias": s.qkv_bias, "dropout": s.dropout})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    p = a["patch"]
    if h % p or w % p:
        raise ShapeError(f"patch {p}x{p} does not tile the map {fmt(shapes[0])}: {h}x{w} is not a multiple of {p} "
                         "(MobileViT resizes the map to one first: an interpolate layer before and after)")
    if c % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the {c} channels of the map {fmt(shapes[0])}: "
                         f"each head takes {c} / {a['heads']} features")
    return shapes[0]


def _tokens(a: Attrs, o: Shape) -> int:
    """The length of each sequence: the positions at one offset, (H / p) x (W / p)."""
    return (o[1] // a["patch"]) * (o[2] // a["patch"])


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (C -> 3C, its bias optional) and proj (C -> C, with bias)."""
    c = o[0]
    return Params(4 * c * c, (4 if a["qkv_bias"] else 1) * c)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The q, k, v and output projections (4 N C^2 over the map's N = H x W positions), QK^T and the scores
    times V (N S C each: every position attends over the S positions of its sequence, C / heads deep per head)."""
    c, n = o[0], o[1] * o[2]
    return 4 * n * c * c + 2 * n * _tokens(a, o) * c


def _scores(a: Attrs, o: Shape) -> int:
    """The attention scores of all sequences: heads x N x S."""
    return a["heads"] * o[1] * o[2] * _tokens(a, o)


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (runtime.py's PatchAttention, measured: tests/test_mobilevit.py): the unfolded map
    (qkv's input, a copy), the projection q, k and v are views of (3M), scaled_dot_product_attention's output
    (proj reads a view of it) and its log-sum-exp per head and position; not its input."""
    m = math.prod(o)
    return (), 5 * m + a["heads"] * o[1] * o[2]


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Beyond its input and output, in evaluation (measured: tests/test_mobilevit.py): while the attention runs,
    the unfolded map (M: a copy), the projection (3M: q, k and v are views of it) and the attention's output
    (M) with its log-sum-exp per head and position; the output's M is the memory pass's own."""
    m = math.prod(o)
    return 4 * m + a["heads"] * o[1] * o[2]


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward, at scaled_dot_product_attention's: the gradients of q, k and v (3M) and of the heads'
    output (M), beside the output's and input's gradients the memory pass counts."""
    return 2 * math.prod(o)


def _timm_in(s: Any) -> dict:
    """timm's Attention (timm.layers.Attention, MobileViT's transformer) called on MobileViT's unfolded patches
    (the importer's patch steps: ``s.arg["patches"]``, the patch side): each sequence is one offset's positions.
    What self_attention refuses of timm's Attention is refused here too (qk_norm, a mask, proj_drop, ...)."""
    p = s.arg.get("patches")
    need(p is not None, "attention on a tensor that is not a map unfolded into patches as timm's MobileVitBlock "
                        "unfolds it")
    c, h, w = s.shapes[0]
    n = (h // p) * (w // p)
    plain = dataclasses.replace(s, arg={k: v for k, v in s.arg.items() if k not in ("patches", "channels_last")},
                                shapes=[(n, c)], shape=(n, c))
    fields = SELF_ATTENTION.from_torch["Attention"].layer(plain)
    return {"op": KIND, "heads": fields["heads"], "patch": p,
            **{k: fields[k] for k in ("qkv_bias", "dropout") if k in fields}}


def _own_in(s: Any) -> dict:
    """archc's own PatchAttention (runtime.py, as a built spec holds it), on the map."""
    m = s.module
    out: dict = {"op": KIND, "heads": m.num_heads, "patch": m.patch}
    if m.qkv.bias is None:
        out["qkv_bias"] = False
    if m.dropout:
        out["dropout"] = float(m.dropout)
    return out


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return f"PatchAttention({out[0]}, {a['heads']}, {a['patch']}, {a['qkv_bias']}, {a['dropout']!r})"


def _detail(a: Attrs) -> str:
    return f"{a['heads']} heads, patch {a['patch']}" + ("" if a["qkv_bias"] else ", no qkv bias")


OP = Op(
    layers=(LayerOp(PatchAttention, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "patch", "qkv_bias", "dropout"), params=_params, macs=_macs,
                 elementwise=lambda a, i, o: 3 * _scores(a, o), depth="params", workspace=_workspace, saves=_saves,
                 backward_workspace=_backward_workspace, mixes=True,
                 latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[0], a["heads"], _tokens(a, o)),
                                                                         _macs(a, i, o))),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", _detail)),),
    # timm's Attention read on MobileViT's unfolded patches (the importer's "patches:" key: the same class on a
    # plain sequence is self_attention's), and archc's own in a module it generated
    from_torch={"patches:Attention": FromTorch(KIND, _timm_in, modules=("timm.layers", "timm.models")),
                "PatchAttention": FromTorch(KIND, _own_in)},
)
