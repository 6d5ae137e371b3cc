"""Local response normalisation across channels (AlexNet, GoogLeNet; ``op: lrn``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Float, LayerBase, PosFloat, PosInt
from ..spec.limits import MAX_DIM
from . import _onnx
from ._base import Attrs, FromOnnx, FromTorch, LayerOp, Op, OpDef, Shape, Style, TorchCode, channels_same, need, per_map

KIND = "lrn"


class LRN(LayerBase):
    """Local response normalisation across channels (AlexNet, GoogLeNet)."""

    op: Literal["lrn"]
    size: PosInt = 5
    alpha: Float = 1e-4
    beta: Float = 0.75
    k: PosFloat = Field(1.0, description="additive constant, > 0")


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """F.local_response_norm holds, besides its input and output, at most two full-size
    temporaries ((k + alpha * avg)^beta is built in steps) or x^2 with its channel-padded copy
    (C + size - 1 channels), whichever is larger."""
    c, h, w = o
    return max(2 * c, c + a["size"] - 1) * h * w


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    c, h, w = o        # x^2 padded by size - 1 channels, its window average, (k + alpha * avg)^beta
    return ("input",), (c + a["size"] - 1) * h * w + 2 * c * h * w


def _from_torch(s: Any) -> dict:
    a = vars(s.module) if s.module is not None else s.arg
    return {"op": "lrn", "size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
            "beta": float(a.get("beta", 0.75)), "k": float(a.get("k", 1.0))}


def _from_onnx(n: Any) -> dict:
    need(1 <= int(n.attrs["size"]) <= MAX_DIM, f"size {n.attrs['size']} (from 1 to {MAX_DIM})")
    return {"op": "lrn", "size": int(n.attrs["size"]), "alpha": _onnx.f32(n.attrs.get("alpha", 1e-4), "alpha"),
            "beta": _onnx.f32(n.attrs.get("beta", 0.75), "beta"), "k": _onnx.f32(n.attrs.get("bias", 1.0), "bias")}


def _work(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * a["size"]


OP = Op(
    layers=(LayerOp(LRN, lambda s: [("", KIND, {"size": s.size, "alpha": s.alpha, "beta": s.beta, "k": s.k})]),),
    kinds=(OpDef(
        KIND, channels_same(KIND), attrs=("size", "alpha", "beta", "k"), elementwise=_work, workspace=_workspace,
        saves=_saves, latency=per_map(("lrn",), lambda a: "lrn", _work),
        torch=TorchCode(None, lambda a, x, m, ip: f"F.local_response_norm({x[0]}, size={a['size']}, "
                                                  f"alpha={a['alpha']!r}, beta={a['beta']!r}, k={a['k']!r})"),
        style=Style("box", "#f2e6f7")),),
    from_torch={"LocalResponseNorm": FromTorch(KIND, _from_torch),
                "fn:local_response_norm": FromTorch(KIND, _from_torch, ("size", "alpha", "beta", "k"))},
    # the node, and the importer's pattern of what older exporters write for it (its size, alpha, beta, k given)
    from_onnx={"LRN": FromOnnx(_from_onnx), "pattern:lrn": FromOnnx(lambda n: {"op": KIND, **n.attrs})},
)
