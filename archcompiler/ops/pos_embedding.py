"""ViT's position embedding (``op: pos_embedding``): a learned (1, S, D) parameter added to the sequence."""

from __future__ import annotations

from typing import Literal

from ..spec.layers import LayerBase
from ._base import FromOnnx, FromTorch, LayerOp, Op, OpDef, Params, Style, TorchCode, sequence

KIND = "pos_embedding"


class PosEmbedding(LayerBase):
    """A learned position embedding added to the sequence (ViT's ``pos_embedding``, a (1, S, D)
    parameter): its length follows the sequence's, and so the image size and the patch."""

    op: Literal["pos_embedding"]


OP = Op(
    layers=(LayerOp(PosEmbedding, lambda s: [("", KIND, {})]),),
    # its gradient is the output's summed over the batch
    kinds=(OpDef(KIND, lambda a, i: sequence(KIND, i), params=lambda a, i, o: Params(o[0] * o[1]),
                 grad_passthrough=True,
                 torch=TorchCode(lambda a, ins, out: f"nn.Parameter(torch.empty(1, {out[0]}, {out[1]}).normal_(std=0.02))",
                                 lambda a, x, m, ip: f"{x[0]} + {m}"),
                 style=Style("box", "#fff2cc")),),
    from_torch={"param:add": FromTorch(KIND, lambda s: {"op": KIND})},
    from_onnx={"param:Add": FromOnnx(lambda n: {"op": KIND})},
)
