"""The sum of K branches laid side by side along the channels (``op: branch_sum``): ResNeSt's split attention
and SKNet's selective kernel (Li et al. 2019) join their branches so."""

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
    fmt,
    image,
    need,
    per_map,
)

KIND = "branch_sum"


class BranchSum(LayerBase):
    """The sum of K branches held side by side along the channels: a map of K x C channels (branch k is
    channels k C to (k + 1) C - 1) becomes C channels, each the sum of that channel over the branches;
    what ``x.sum(1)`` gives of a N x K x C x H x W tensor (ResNeSt's split attention sums its radix
    groups, SKNet sums its stacked paths). With a ``mul`` by a ``branch_softmax`` before it, the sum of
    the branches weighted by attention over them."""

    op: Literal["branch_sum"]
    branches: PosInt = Field(description="K, the number of branches (ResNeSt's radix, SKNet's paths); it must "
                                         "divide the input's channels")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    if c % a["branches"]:
        raise ShapeError(f"{KIND}: branches={a['branches']} must divide the input's channels, got {fmt(shapes[0])}")
    return (c // a["branches"], h, w)


def _from_torch(s: Any) -> dict:
    """The importer's pattern: ``x.sum(1)`` of K groups of channels (a map reshaped to N x K x C x H x W,
    or maps stacked along dim 1); ``s.arg["branches"]``: K."""
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3, "a sum over branches of other than one map")
    return {"op": KIND, "branches": int(s.arg["branches"])}


OP = Op(
    layers=(LayerOp(BranchSum, lambda s: [("", KIND, {"branches": s.branches})]),),
    # a sum over a view's axis: a new C x H x W tensor; its backward needs only the shape (autograd keeps
    # nothing, measured: tests/test_split_attention.py); K - 1 additions per output element
    kinds=(OpDef(
        KIND, _shape, attrs=("branches",), elementwise=lambda a, i, o: math.prod(i[0]),
        latency=per_map(("add",), lambda a: "add", lambda a, i, o: math.prod(i[0])),
        torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}.unflatten(1, ({a['branches']}, -1)).sum(1)"),
        style=Style("circle", "#eeeeee", lambda a: f"{a['branches']} branches")),),
    from_torch={"pattern:branch_sum": FromTorch(KIND, _from_torch)},
    # the ONNX reader's pattern (importers/onnx/layouts.py)
    from_onnx={"pattern:branch_sum": FromOnnx(lambda n: {"op": KIND, "branches": int(n.attrs["branches"])})},
)
