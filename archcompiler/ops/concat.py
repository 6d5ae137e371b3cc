"""Concatenation along channels (``op: concat``: an inception module's output)."""

from __future__ import annotations

from typing import Any, Literal

from ..spec.layers import ManyInputs
from . import _onnx
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
    need,
    per_map,
)

KIND = "concat"


class Concat(ManyInputs):
    """Concatenation along channels (an inception module's output); of sequences, along the tokens (CaiT's
    class token before the patches)."""

    op: Literal["concat"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if shapes and all(len(s) == 2 for s in shapes):           # sequences: along the tokens, of one dimension
        if len({s[1] for s in shapes}) != 1:
            raise ShapeError("concat needs sequences of the same dimension, got " + ", ".join(fmt(s) for s in shapes))
        return (sum(s[0] for s in shapes), shapes[0][1])
    if shapes and all(len(s) == 4 for s in shapes):           # clips: along channels, of the same T x H x W
        if len({s[1:] for s in shapes}) != 1:
            raise ShapeError("concat needs clips of the same frames, height and width, got "
                             + ", ".join(fmt(s) for s in shapes))
        return (sum(s[0] for s in shapes), *shapes[0][1:])
    if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) != 1:
        raise ShapeError("concat needs inputs of the same height and width, got " + ", ".join(fmt(s) for s in shapes))
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _from_torch(s: Any) -> dict | None:
    need(s.arg.get("dim", 0) == 1, f"a concatenation along dim {s.arg.get('dim', 0)} (archc's is along channels, "
                                   "or a sequence's tokens)")
    return {"op": "concat"} if len(s.shapes) > 1 else None      # torch.cat([x], 1) is x (DenseNet)


def _from_onnx(n: Any) -> dict:
    # on channels-last views (N x H x W x C: Keras's export) the channels are the last axis
    channels = (3, -1) if n.last else (1, -3)
    need(n.attrs.get("axis") in channels, "a concatenation along another axis than the channels")
    _onnx.no_constants(n, "concatenation")
    need(len(n.consts) >= 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's concat joins two or more)")
    return {"op": "concat"}


OP = Op(
    layers=(LayerOp(Concat, lambda s: [("", KIND, {})]),),
    kinds=(OpDef(KIND, _shape, join="stack", grad_passthrough=True,
                 latency=per_map(("concat",), lambda a: "concat", elements),
                 torch=TorchCode(None, lambda a, x, m, ip: f"torch.cat([{', '.join(x)}], 1)"),
                 style=Style("ellipse", "#eeeeee")),),
    from_torch={"fn:cat": FromTorch(KIND, _from_torch, ("dim",))},
    from_onnx={"Concat": FromOnnx(_from_onnx)},
)
