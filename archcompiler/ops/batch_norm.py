"""Batch normalisation over an image's channels (``op: batch_norm``, and ``norm:`` of a conv)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..spec.base import Strict
from ..spec.layers import LayerBase, PosFloat, not_bool
from . import _onnx
from ._base import (
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Params,
    Style,
    TorchCode,
    channels_same,
    elements,
    need,
    owns,
    per_map,
)

KIND = "batch_norm2d"
Momentum = Annotated[float, BeforeValidator(not_bool), Field(ge=0, le=1)]


class BatchNormSpec(Strict):
    """A conv's ``norm:`` written out, with its own eps and momentum."""

    kind: Literal["batch_norm"] = "batch_norm"
    eps: PosFloat = 1e-5
    momentum: Momentum = 0.1


class BatchNorm(LayerBase):
    """Batch normalisation over an image's channels (nn.BatchNorm2d), with a learned per-channel
    scale and shift and running statistics."""

    op: Literal["batch_norm"]
    eps: PosFloat = 1e-5
    momentum: Momentum = 0.1


def attrs_of(eps: float, momentum: float) -> dict:
    return {"eps": eps, "momentum": momentum}


def _from_torch(s: Any) -> dict:
    m = s.module
    need(m.affine and m.track_running_stats and m.momentum is not None,
         "a BatchNorm2d without affine parameters, running statistics or a momentum")
    return {"op": "batch_norm", "eps": m.eps, "momentum": m.momentum}


def _functional(s: Any) -> dict:
    """F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, ...) in a module's forward
    (timm's BatchNormAct2d): a batch_norm with the module's parameters and buffers."""
    owns(s, "weight", "bias", "running_mean", "running_var")
    need(len(s.shapes[0]) == 3, "a batch norm of other than an image")
    need(s.arg.get("momentum") is not None, "a cumulative moving average (momentum None)")
    need(hasattr(s.module, "num_batches_tracked"), "a module without BatchNorm's num_batches_tracked buffer")
    return {"op": "batch_norm", "eps": float(s.arg.get("eps", 1e-5)), "momentum": float(s.arg["momentum"])}


def _from_onnx(n: Any) -> dict:
    momentum = _onnx.f32(n.attrs.get("momentum", 0.9), "momentum")
    need(0 <= momentum <= 1, f"momentum {momentum} (it must be from 0 to 1)")
    return {"op": "batch_norm", "eps": _onnx.eps(n), "momentum": _onnx.f32(1 - momentum)}


OP = Op(
    layers=(LayerOp(BatchNorm, lambda s: [("", KIND, attrs_of(s.eps, s.momentum))]),),
    kinds=(OpDef(
        KIND, channels_same("batch_norm"), attrs=("eps", "momentum"),
        params=lambda a, i, o: Params(o[0], o[0], 2 * o[0] + 1),   # running mean, running var, num_batches_tracked
        torch=TorchCode(lambda a, ins, out: f"nn.BatchNorm2d({out[0]}, eps={a['eps']}, momentum={a['momentum']})",
                        lambda a, x, m, ip: f"{m}({x[0]})"),
        style=Style("box", "#f2e6f7"),
        saves=lambda a, i, o: (("input",), 2 * o[0]),
        latency=per_map(("batch_norm",), lambda a: "batch_norm", elements), eval_affine=True),),
    from_torch={"BatchNorm2d": FromTorch(KIND, _from_torch),
                "fn:batch_norm": FromTorch(KIND, _functional, ("running_mean", "running_var", "weight", "bias",
                                                               "training", "momentum", "eps"))},
    from_onnx={"BatchNormalization": FromOnnx(_from_onnx, {1: "weight", 2: "bias", 3: "running_mean",
                                                           4: "running_var"})},
)
