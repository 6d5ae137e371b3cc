"""Softmax over the channels (``op: softmax``): as a network's last op, its probability output."""

from __future__ import annotations

import math
from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import FromOnnx, FromTorch, LayerOp, Op, OpDef, Style, TorchCode, need, same

KIND = "softmax"


class Softmax(LayerBase):
    """Softmax over channels. A final softmax is the model's probability output: the torch
    backend applies it in ``predict_proba`` and trains on the logits before it."""

    op: Literal["softmax"]


def _from_torch(s: Any) -> dict:
    dim = getattr(s.module, "dim", None) if s.module is not None else s.arg.get("dim")
    need(dim in (1, -1 if len(s.shape) == 1 else 1), f"softmax over dim {dim} (archc's is over the channels)")
    return {"op": "softmax"}


def _from_onnx(n: Any) -> dict:
    need(n.attrs.get("axis", -1) in (1, -1) and len(n.shape) == 1, "a softmax over another axis")
    return {"op": "softmax"}


OP = Op(
    layers=(LayerOp(Softmax, lambda s: [("", KIND, {})]),),
    kinds=(OpDef(KIND, same(KIND), elementwise=lambda a, i, o: 3 * math.prod(o), probabilities=True,
                 torch=TorchCode(None, lambda a, x, m, ip: f"F.softmax({x[0]}, dim=1)"), style=Style()),),
    from_torch={"Softmax": FromTorch(KIND, _from_torch), "fn:softmax": FromTorch(KIND, _from_torch, ("dim",))},
    from_onnx={"Softmax": FromOnnx(_from_onnx)},
)
