"""Stochastic depth on a residual branch (``op: stochastic_depth``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..spec.layers import LayerBase, not_bool
from ._base import A_STATEMENT, FromTorch, LayerOp, Op, OpDef, Style, TorchCode, need, same

KIND = "stochastic_depth"


class StochasticDepth(LayerBase):
    """Stochastic depth (Huang et al. 2016; torchvision.ops.StochasticDepth) on a residual branch: in
    training each sample's branch (mode ``row``; ``batch``: the whole batch's) is dropped with
    probability ``p`` and what survives is scaled by 1 / (1 - p); the identity in evaluation.
    EfficientNet's rate grows with the block's position: ``p: "0.2 * i / N"``."""

    op: Literal["stochastic_depth"]
    p: Annotated[float, BeforeValidator(not_bool), Field(ge=0, le=1)] = Field(
        description="drop probability, in [0, 1]")
    mode: Literal["row", "batch"] = Field("row", description="row: per sample (torchvision's default in its "
                                                             "models); batch: the whole batch at once")


def _from_torch(s: Any) -> dict:
    p = s.module.p if s.module is not None else s.arg["p"]
    mode = s.module.mode if s.module is not None else s.arg.get("mode", "row")
    return {"op": "stochastic_depth", "p": float(p), "mode": "row" if mode in ("row", True) else "batch"}


def _timm_in(s: Any) -> dict:
    """timm's DropPath: per sample, the survivors scaled by 1 / (1 - p) (scale_by_keep), as torchvision's."""
    need(getattr(s.module, "scale_by_keep", True), "a DropPath that does not scale what survives (scale_by_keep=False)")
    return {"op": "stochastic_depth", "p": float(s.module.drop_prob), "mode": "row"}


OP = Op(
    layers=(LayerOp(StochasticDepth, lambda s: [("", KIND, {"p": s.p, "mode": s.mode})]),),
    # the residual branch times a per-sample 0 or 1 / (1 - p) in training (autograd keeps that
    # noise: one value per sample, or per batch); the branch itself in evaluation
    kinds=(OpDef(
        KIND, same(KIND), attrs=("p", "mode"), saves=lambda a, i, o: ((), 1), alias="eval", latency=A_STATEMENT,
        torch=TorchCode(None, lambda a, x, m, ip: f"stochastic_depth({x[0]}, {a['p']!r}, {a['mode'] == 'row'}, "
                                                  "self.training)",
                        helper="archcompiler.backends.torch.runtime:stochastic_depth"),
        style=Style("box", "#f5f5f5", lambda a: f"p {a['p']:.3g}")),),
    # torchvision.ops.StochasticDepth and its function (archc's own helper takes mode as row=True); timm's DropPath
    from_torch={"StochasticDepth": FromTorch(KIND, _from_torch),
                "fn:stochastic_depth": FromTorch(KIND, _from_torch, ("p", "mode", "training")),
                "DropPath": FromTorch(KIND, _timm_in, modules=("timm.layers",))},
)
