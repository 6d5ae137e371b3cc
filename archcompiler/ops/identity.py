"""The input itself (``op: identity``)."""

from __future__ import annotations

from typing import Literal

from ..spec.layers import LayerBase
from ._base import A_STATEMENT, FromTorch, LayerOp, Op, OpDef, Style, TorchCode, same

KIND = "identity"


class Identity(LayerBase):
    """The input itself: a named point of the graph (a shortcut's start, a place for a later edit)."""

    op: Literal["identity"]


OP = Op(
    layers=(LayerOp(Identity, lambda s: [("", KIND, {})]),),
    kinds=(OpDef(KIND, same(KIND), elementwise=lambda a, i, o: 0, alias="view", passthrough=lambda a, i: True,
                 grad_passthrough=True, latency=A_STATEMENT, torch=TorchCode(None, lambda a, x, m, ip: x[0]),
                 style=Style()),),
    from_torch={"Identity": FromTorch(KIND, lambda s: None)},        # the input itself: no layer
)
