"""Softmax across K branches laid side by side along the channels (``op: branch_softmax``): the attention
over branches of ResNeSt's split attention (its RadixSoftmax) and of SKNet's selective kernel."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosInt
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    elements,
    fmt,
    image,
    need,
    per_map,
)

KIND = "branch_softmax"


class BranchSoftmax(LayerBase):
    """Softmax across K branches held side by side along the channels: at each position, each channel's
    K values (one per branch, channels c, C + c, ..., (K - 1) C + c) become weights that sum to 1; a
    ``mul`` of the branches by them and a ``branch_sum`` give the branches' attention-weighted sum
    (SKNet's selective kernel: softmax(dim=1) of N x K x C x 1 x 1). With ``groups`` G (ResNeSt's
    cardinality, its RadixSoftmax) the input's channels are G groups each holding its K branches
    (G x K x C / G) and the output's are in branch order (K x G x C / G), as ResNeSt's view, transpose,
    softmax and reshape leave them."""

    op: Literal["branch_softmax"]
    branches: PosInt = Field(description="K, the number of branches (ResNeSt's radix, SKNet's paths)")
    groups: PosInt = Field(1, description="G, the groups whose branches the input holds together (ResNeSt's "
                                          "cardinality); branches x groups must divide the channels")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, _, _ = image(KIND, shapes)
    k, g = a["branches"], a["groups"]
    if c % (k * g):
        raise ShapeError(f"{KIND}: branches x groups = {k} x {g} must divide the input's channels, got "
                         f"{fmt(shapes[0])}")
    return shapes[0]


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    k, g = a["branches"], a["groups"]
    if g == 1:
        return f"F.softmax({x[0]}.unflatten(1, ({k}, -1)), dim=1).flatten(1, 2)"
    return f"F.softmax({x[0]}.unflatten(1, ({g}, {k}, -1)).transpose(1, 2), dim=1).flatten(1, 3)"


def _layer(branches: int, groups: int) -> dict:
    return {"op": KIND, "branches": branches, **({"groups": groups} if groups != 1 else {})}


def _pattern(s: Any) -> dict:
    """The importer's pattern: ``softmax(x, dim=1)`` of K groups of channels (SKNet's attention, a map
    reshaped to N x K x C x 1 x 1); ``s.arg["branches"]``: K."""
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3, "a softmax over branches of other than one map")
    return _layer(int(s.arg["branches"]), 1)


def _radix_softmax(s: Any) -> dict:
    """timm's RadixSoftmax (ResNeSt's split attention; a leaf of the trace): its map viewed as N x G x K x
    rest, transposed, softmax over K, flattened; where the radix is 1 it is a sigmoid gate instead."""
    m = s.module
    need(int(m.radix) > 1, "a radix of 1 (RadixSoftmax is then a sigmoid gate, not a softmax over branches)")
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3 and s.shapes[0][0] % (int(m.radix) * int(m.cardinality)) == 0,
         f"a RadixSoftmax of other than a map whose channels hold radix x cardinality groups (got {s.shapes})")
    return _layer(int(m.radix), int(m.cardinality))


OP = Op(
    layers=(LayerOp(BranchSoftmax, lambda s: [("", KIND, {"branches": s.branches, "groups": s.groups})]),),
    # softmax over a view's axis (a copy first where G > 1 makes it a transposed view); autograd keeps the
    # output (softmax's backward reads it), as the softmax op
    kinds=(OpDef(
        KIND, _shape, attrs=("branches", "groups"), elementwise=lambda a, i, o: 3 * math.prod(o),
        saves=lambda a, i, o: (("output",), 0),
        latency=per_map(("add",), lambda a: "add", elements),
        torch=TorchCode(None, _call),
        style=Style("box", "#fce4d6", lambda a: f"{a['branches']} branches"
                                                + (f", {a['groups']} groups" if a["groups"] != 1 else ""))),),
    from_torch={"pattern:branch_softmax": FromTorch(KIND, _pattern),
                # timm's module, a leaf of the trace (its class in timm's packages)
                "RadixSoftmax": FromTorch(KIND, _radix_softmax, modules=("timm.layers", "timm.models"))},
    # the ONNX reader's pattern (importers/onnx/layouts.py)
    from_onnx={"pattern:branch_softmax": FromOnnx(lambda n: _layer(int(n.attrs["branches"]), int(n.attrs["groups"])))},
)
