"""Group normalisation over groups of an image's channels (Wu & He 2018; ``op: group_norm``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import LayerBase, PosFloat, PosInt
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
    image,
    need,
    owns,
    per_map,
)
from .activation import Activation, lower_act

KIND = "group_norm"


class GroupNorm(LayerBase):
    """Group normalisation (Wu & He 2018; nn.GroupNorm): each sample's channels split into groups, each
    group normalised over its channels and positions, then a learned per-channel scale and shift;
    optionally followed by an activation."""

    op: Literal["group_norm"]
    groups: PosInt = Field(description="the number of groups (Wu & He: 32); it must divide the channels")
    eps: PosFloat = 1e-5
    act: Activation = "none"


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, _, _ = image(KIND, shapes)
    if c % a["groups"]:
        raise ShapeError(f"{KIND}: groups={a['groups']} must divide the input's {c} channels "
                         f"({c} is not a multiple of {a['groups']})")
    return shapes[0]


def _layer(groups: int, eps: float) -> dict:
    return {"op": KIND, "groups": groups, "eps": eps}


def _from_torch(s: Any) -> dict:
    m = s.module
    need(len(s.shapes[0]) == 3, "a GroupNorm of other than an image (archc's group_norm reads C x H x W maps)")
    need(m.affine, "a GroupNorm without its per-channel weight and bias (affine=False)")
    return _layer(m.num_groups, m.eps)


def _functional(s: Any) -> dict:
    """F.group_norm(x, groups, self.weight, self.bias, eps) in a module's forward (timm's GroupNorm1)."""
    owns(s, "weight", "bias")
    need(len(s.shapes[0]) == 3, "a group norm of other than an image")
    return _layer(int(s.arg["num_groups"]), float(s.arg.get("eps", 1e-5)))


def _from_onnx(n: Any) -> dict:
    """GroupNormalization (opset 21: a per-channel scale and bias; opset 18's per-group ones are read where
    there is one group per channel)."""
    need(len(n.shapes) == 1 and len(n.shapes[0]) == 3 and not n.last, "a GroupNormalization of other than an image")
    c = n.shapes[0][0]
    need(len(n.consts) == 3 and all(v is not None and tuple(getattr(v, "shape", ())) == (c,) for v in n.consts[1:]),
         f"a GroupNormalization without a scale and bias of the {c} channels (constants)")
    need(int(n.attrs.get("stash_type", 1)) == 1, "a GroupNormalization whose statistics are not float32")
    return _layer(int(n.attrs["num_groups"]), _onnx.eps(n))


def _pattern(n: Any) -> dict:
    """The exporters' pattern before opset 21 (read by the ONNX importer's steps): Reshape to
    N x groups x (C / groups * H * W), InstanceNormalization (scale 1, bias 0), Reshape back, Mul by a
    C x 1 x 1 scale, Add of a C x 1 x 1 shift; ``n.attrs``: its ``groups`` and the ``epsilon``."""
    need(int(n.attrs["groups"]) >= 1, "no groups")
    return _layer(int(n.attrs["groups"]), _onnx.eps(n))


OP = Op(
    layers=(LayerOp(GroupNorm, lambda s: [("", KIND, {"groups": s.groups, "eps": s.eps}), *lower_act(s.act)]),),
    # F.group_norm (native_group_norm): per (sample, group) a mean and 1 / std (N x groups each: made with
    # the output, kept by autograd with the input); element operations as layer_norm's, 5 per element (a sum
    # and a sum of squares for the statistics, subtract and multiply by 1 / std, the affine map); measured
    # (tests/test_group_norm.py): the inference peak exactly, a training step within 1%
    kinds=(OpDef(
        KIND, _shape, attrs=("groups", "eps"),
        params=lambda a, i, o: Params(o[0], o[0]),
        elementwise=lambda a, i, o: 5 * math.prod(o), workspace=lambda a, i, o: 2 * a["groups"],
        saves=lambda a, i, o: (("input",), 2 * a["groups"]),
        latency=per_map(("batch_norm",), lambda a: "batch_norm", elements),
        torch=TorchCode(lambda a, ins, out: f"nn.GroupNorm({a['groups']}, {out[0]}, eps={a['eps']})",
                        lambda a, x, m, ip: f"{m}({x[0]})"),
        style=Style("box", "#f2e6f7", lambda a: f"groups {a['groups']}")),),
    from_torch={"GroupNorm": FromTorch(KIND, _from_torch),
                "fn:group_norm": FromTorch(KIND, _functional, ("num_groups", "weight", "bias", "eps"))},
    from_onnx={"GroupNormalization": FromOnnx(_from_onnx, {1: "weight", 2: "bias"}),
               "pattern:instance_norm_groups": FromOnnx(_pattern)},
)
