"""Dropout (``op: dropout``): the input itself in evaluation."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, Rate
from ._base import A_STATEMENT, FromTorch, LayerOp, Op, OpDef, Style, TorchCode, same

KIND = "dropout"


class Dropout(LayerBase):
    """Dropout: in training each value is zeroed with probability ``p`` and the rest scaled by 1 / (1 - p)."""

    op: Literal["dropout"]
    p: Rate = Field(0.5, description="drop probability, in [0, 1)")


def _from_torch(s: Any) -> dict | None:
    p = s.module.p if s.module is not None else s.arg.get("p", 0.5)
    return {"op": "dropout", "p": float(p)} if p else None      # p 0: the input, in training too


OP = Op(
    layers=(LayerOp(Dropout, lambda s: [("", KIND, {"p": s.p})]),),
    kinds=(OpDef(
        KIND, same(KIND), attrs=("p",), saves=lambda a, i, o: ((), math.prod(o)),   # the mask
        alias="eval", latency=A_STATEMENT,
        torch=TorchCode(None, lambda a, x, m, ip: f"F.dropout({x[0]}, p={a['p']!r}, training=self.training)"),
        style=Style("box", "#f5f5f5", lambda a: f"{a['p']:g}")),),
    from_torch={"Dropout": FromTorch(KIND, _from_torch),
                "fn:dropout": FromTorch(KIND, _from_torch, ("p", "training", "inplace"))},
)
