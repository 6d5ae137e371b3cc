"""ViT's class token (``op: class_token``): a learned token prepended to the sequence."""

from __future__ import annotations

from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import Attrs, FromOnnx, FromTorch, LayerOp, Op, OpDef, Params, Shape, Style, TorchCode, need, sequence

KIND = "class_token"


class ClassToken(LayerBase):
    """A learned token of the sequence's dimension, prepended to it (ViT's ``class_token``, a
    (1, 1, D) parameter): S tokens become S + 1. Two in a row prepend two (DeiT's distillation token, then
    its class token before it)."""

    op: Literal["class_token"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    return (s + 1, d)


def _from_torch(s: Any) -> dict:
    """``torch.cat((token.expand(B, -1, -1), x), dim=1)``: a (1, 1, D) parameter before a sequence of D."""
    d = s.shapes[0][-1] if len(s.shapes) == 1 and len(s.shapes[0]) == 2 else None
    need(d is not None and s.arg.get("param_shape") == (1, 1, d) and s.arg.get("dim", 0) in (1, -2)
         and s.shape == (s.shapes[0][0] + 1, d),
         f"a parameter of {s.arg.get('param_shape')} concatenated along dim {s.arg.get('dim', 0)} (archc's "
         f"{KIND} is one (1, 1, D) token before a sequence of D features)")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(ClassToken, lambda s: [("", KIND, {})]),),
    # a learned (1, 1, D) token prepended to every sequence: torch.cat copies the sequence
    kinds=(OpDef(KIND, _shape, params=lambda a, i, o: Params(o[1]),
                 torch=TorchCode(lambda a, ins, out: f"nn.Parameter(torch.zeros(1, 1, {out[1]}))",
                                 lambda a, x, m, ip: f"torch.cat([{m}.expand({x[0]}.shape[0], -1, -1), {x[0]}], dim=1)"),
                 style=Style("box", "#fff2cc")),),
    # a (1, 1, D) parameter (initializer) concatenated before the tokens
    from_torch={"param:cat": FromTorch(KIND, _from_torch, ("dim",))},
    from_onnx={"param:Concat": FromOnnx(lambda n: {"op": KIND})},
)
