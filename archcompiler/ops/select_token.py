"""One token of a sequence (``op: select_token``: ViT's ``x[:, 0]``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, NonNegInt
from ._base import (
    A_STATEMENT,
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
    need,
    sequence,
)

KIND = "select_token"


class SelectToken(LayerBase):
    """One token of a sequence, its features as a flat vector (ViT's ``x[:, 0]``: the class token
    before the head)."""

    op: Literal["select_token"]
    index: NonNegInt = Field(0, description="which token, from 0 (the class token)")


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    if a["index"] >= s:
        raise ShapeError(f"token {a['index']} is not within the sequence {fmt(shapes[0])} of {s} tokens")
    return (d,)


def _from_torch(s: Any) -> dict:
    index = s.arg.get("index")
    ok = isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) and isinstance(index[1], int)
    need(ok and len(s.shapes) == 1 and len(s.shapes[0]) == 2 and index[1] >= 0,
         f"indexing with {index!r} (archc's select_token is x[:, i] of a sequence)")
    return {"op": KIND, "index": index[1]}


OP = Op(
    layers=(LayerOp(SelectToken, lambda s: [("", KIND, {"index": s.index})]),),
    kinds=(OpDef(KIND, _shape, attrs=("index",), elementwise=lambda a, i, o: 0, alias="view", latency=A_STATEMENT,
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}[:, {a['index']}]"),
                 style=Style("box", "#f5f5f5", lambda a: f"token {a['index']}")),),
    from_torch={"index:token": FromTorch(KIND, _from_torch, ("index",))},
    # a Gather of one token along the sequence's axis
    from_onnx={"param:Gather": FromOnnx(lambda n: {"op": KIND, "index": n.attrs["index"]})},
)
