"""Batch normalisation (``op: batch_norm``, and ``norm:`` of a conv): over an image's channels, a sequence's
features (each token of each sample one observation: LeViT's ``LinearNorm``) or a flat vector's."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..spec.base import Strict
from ..spec.layers import LayerBase, PosFloat, not_bool
from . import _onnx
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Params,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    elements,
    features,
    fmt,
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
    """Batch normalisation with a learned per-channel scale and shift and running statistics: over an image's
    channels (nn.BatchNorm2d; a clip's, C x T x H x W, nn.BatchNorm3d), over a sequence's features with each
    token of each sample one observation (the N x S tokens flattened to one batch for nn.BatchNorm1d: LeViT's
    ``LinearNorm``, ``NormLinear`` on the tokens), or over a flat vector's features (nn.BatchNorm1d)."""

    op: Literal["batch_norm"]
    eps: PosFloat = 1e-5
    momentum: Momentum = 0.1


def attrs_of(eps: float, momentum: float) -> dict:
    return {"eps": eps, "momentum": momentum}


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """Its input's shape: an image, a sequence or a flat vector."""
    if len(shapes) != 1:
        raise ShapeError(f"batch_norm takes one input, got {len(shapes)}")
    if len(shapes[0]) not in (1, 2, 3, 4):
        raise ShapeError(f"batch_norm needs an image, a clip, a sequence or a flat vector, got {fmt(shapes[0])}")
    return shapes[0]


def _module(a: Attrs, ins: list, out: tuple) -> str:
    """nn.BatchNorm2d over an image's channels (BatchNorm3d over a clip's), nn.BatchNorm1d over a sequence's or a
    vector's features."""
    cls = {3: "BatchNorm2d", 4: "BatchNorm3d"}.get(len(out), "BatchNorm1d")
    return f"nn.{cls}({features(out)}, eps={a['eps']}, momentum={a['momentum']})"


def _from_torch(s: Any) -> dict:
    """nn.BatchNorm2d on an image; nn.BatchNorm1d on a flat vector (timm's NormLinear) or on a sequence's
    tokens flattened to one batch (``x.flatten(0, 1)``: LeViT's LinearNorm, read by the importer as the
    sequence), not on a sequence of channels (N x C x L, BatchNorm1d's other form)."""
    m = s.module
    need(m.affine and m.track_running_stats and m.momentum is not None,
         "a BatchNorm without affine parameters, running statistics or a momentum")
    need(len(s.shapes[0]) == (3 if type(m).__name__ == "BatchNorm2d" else 1) or s.arg.get("batched"),
         f"a BatchNorm1d over the channels of a {fmt(s.shapes[0])} input (archc's batch_norm over a sequence "
         "normalises each token's features: the tokens flattened to one batch, x.flatten(0, 1))")
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
    need(not int(n.attrs.get("training_mode", 0)), "training_mode 1 (it normalizes by the batch's own statistics; "
                                                   "archc's batch_norm reads the running ones in evaluation)")
    momentum = _onnx.f32(n.attrs.get("momentum", 0.9), "momentum")
    need(0 <= momentum <= 1, f"momentum {momentum} (it must be from 0 to 1)")
    return {"op": "batch_norm", "eps": _onnx.eps(n), "momentum": _onnx.f32(1 - momentum)}


OP = Op(
    layers=(LayerOp(BatchNorm, lambda s: [("", KIND, attrs_of(s.eps, s.momentum))]),),
    kinds=(OpDef(
        KIND, _shape, attrs=("eps", "momentum"),
        # running mean, running var, num_batches_tracked
        params=lambda a, i, o: Params(features(o), features(o), 2 * features(o) + 1),
        torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})",
                        # the N x S tokens as one batch of observations, and back
                        sequence_call=lambda a, x, m, ip: f"{m}({x[0]}.flatten(0, 1)).view_as({x[0]})"),
        style=Style("box", "#f2e6f7"),
        # its input (a view of it for a sequence) and the batch's mean and 1 / std per channel
        saves=lambda a, i, o: (("input",), 2 * features(o)),
        latency=per_map(("batch_norm",), lambda a: "batch_norm", elements), eval_affine=True,
        view_out=lambda a, i: len(i[0]) == 2),),      # a sequence's norm, viewed as the sequence
    from_torch={"BatchNorm2d": FromTorch(KIND, _from_torch), "BatchNorm1d": FromTorch(KIND, _from_torch),
                "fn:batch_norm": FromTorch(KIND, _functional, ("running_mean", "running_var", "weight", "bias",
                                                               "training", "momentum", "eps"))},
    from_onnx={"BatchNormalization": FromOnnx(_from_onnx, {1: "weight", 2: "bias", 3: "running_mean",
                                                           4: "running_var"})},
)
