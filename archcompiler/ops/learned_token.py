"""A learned token on its own (``op: learned_token``: CaiT's class token before its class-attention blocks)."""

from __future__ import annotations

from typing import Any, Literal

from ..spec.layers import LayerBase
from ._base import A_STATEMENT, Attrs, FromTorch, LayerOp, Op, OpDef, Params, Shape, Style, TorchCode, need, sequence

KIND = "learned_token"


class LearnedToken(LayerBase):
    """A learned token of the input sequence's dimension, on its own: a sequence of one token (1 x D), the
    same for every sample, a (1, 1, D) parameter expanded over the batch (CaiT's ``cls_token``, which its
    class-attention blocks update while the patches stay as they are: ``concat`` it before the patches). The
    input gives only the batch and D; nothing of it is read. (``class_token`` prepends the token instead.)"""

    op: Literal["learned_token"]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    _, d = sequence(KIND, shapes)
    return (1, d)


def _from_torch(s: Any) -> dict:
    """``token.expand(x.shape[0], -1, -1)`` read by more than one call: a (1, 1, D) parameter, D the sequence's."""
    d = s.shapes[0][-1] if len(s.shapes) == 1 and len(s.shapes[0]) == 2 else None
    need(d is not None and s.arg.get("param_shape") == (1, 1, d) and s.shape == (1, d),
         f"a parameter of {s.arg.get('param_shape')} expanded to {s.shape} (archc's {KIND} is one (1, 1, D) token "
         "expanded over the batch, D the sequence's)")
    return {"op": KIND}


OP = Op(
    layers=(LayerOp(LearnedToken, lambda s: [("", KIND, {})]),),
    # the parameter expanded over the batch: a view of it, no memory and no work (the memory pass sees it as a
    # view of its input, which holds the batch)
    kinds=(OpDef(KIND, _shape, params=lambda a, i, o: Params(o[1]), elementwise=lambda a, i, o: 0, alias="view",
                 latency=A_STATEMENT,
                 torch=TorchCode(lambda a, ins, out: f"nn.Parameter(torch.zeros(1, 1, {out[1]}))",
                                 lambda a, x, m, ip: f"{m}.expand({x[0]}.shape[0], -1, -1)"),
                 style=Style("box", "#fff2cc")),),
    # a (1, 1, D) parameter expanded over the batch, read by several calls (the importer gives it this key)
    from_torch={"param:expand": FromTorch(KIND, _from_torch)},
)
