"""y = scale * x + bias, each a fixed number or learned (``op: affine``): HGNetV2's LearnableAffineBlock (one
learned number each), ResMLP's Affine (one per feature, ``torch.addcmul(beta, alpha, x)``), NF-nets' constant
gains (``x * 1.7015``, ``out * alpha``); and, when archc imports a model, a number added to or multiplied with a
layer's output (FastViT's ``0 + conv(x)``, which is the other operand)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..spec.layers import Float, LayerBase
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Params,
    Prim,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    elements,
    features,
    fmt,
    need,
    per_map,
)

KIND = "affine"                # both numbers fixed: no parameter, a function of its input
LEARNED = "learned_affine"     # one learned parameter (the scale or the bias), held as the node's module

Held = Literal["C", "Cx1x1", "1x1xC"]


class Affine(LayerBase):
    """y = scale * x + bias, the scale and the bias each a fixed number or ``learned``: one learned number
    (``per: tensor``: HGNetV2's LearnableAffineBlock) or one per channel of an image or feature of a token
    (``per: channel``: ResMLP's Affine), starting at 1 (scale) and 0 (bias). A constant form
    (``{op: affine, scale: 1.7015}``) multiplies or shifts by a number (NF-nets' gains). A layer with one
    learned parameter holds it as itself (its state_dict key is the layer's path, as a layer scale's); with
    both, they are PATH.scale and PATH.bias (``names``)."""

    op: Literal["affine"]
    scale: Float | Literal["learned"] = Field(1.0, description="the factor: a number, or 'learned'")
    bias: Float | Literal["learned"] = Field(0.0, description="the number added after it: a number, or 'learned'")
    per: Literal["tensor", "channel"] = Field(
        "channel", description="a learned scale or bias: one number ('tensor'), or one per channel of an image "
                               "or feature of a token ('channel')")
    held: Held | None = Field(
        None, description="how a per-channel parameter is held (its state_dict shape): 'Cx1x1' (default on an "
                          "image), 'C' (default on tokens; on an image viewed as C x 1 x 1), '1x1xC' on tokens "
                          "(timm's ResMLP)")
    names: Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]],
                     Field(min_length=2, max_length=2)] = Field(
        ["scale", "bias"], description="the two parameters' names (PATH.NAME) where both are learned (ResMLP: "
                                       "[alpha, beta])")

    @field_validator("names")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if v[0] == v[1]:
            raise ValueError(f"the scale and the bias need two names, got {v[0]!r} twice")
        return v

    @model_validator(mode="after")
    def _held_per_channel(self) -> Affine:
        if self.held is not None and (self.per != "channel" or "learned" not in (self.scale, self.bias)):
            raise ValueError("'held' is the shape of a learned per-channel parameter (per: channel, and a "
                             "learned scale or bias)")
        return self


def _lower(s: Affine) -> list[Prim]:
    common = {"per": s.per, "held": s.held}
    if s.scale == "learned" and s.bias == "learned":       # two parameters, each its own node: PATH.scale, PATH.bias
        return [(f"/{s.names[0]}", LEARNED, {"scale": "learned", "bias": 0.0, **common}),
                (f"/{s.names[1]}", LEARNED, {"scale": 1.0, "bias": "learned", **common})]
    if "learned" in (s.scale, s.bias):
        return [("", LEARNED, {"scale": s.scale, "bias": s.bias, **common})]
    return [("", KIND, {"scale": s.scale, "bias": s.bias})]


# ----------------------------------------------------------------------------- shapes and counts


def _const_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"affine takes one input, got {len(shapes)}")
    return shapes[0]


def _held(a: Attrs, o: Shape) -> str:
    """The learned parameter's held shape on this input: 'C', 'Cx1x1', '1x1xC', or '1' (one number)."""
    if a["per"] == "tensor":
        return "1"
    return a["held"] or ("C" if len(o) == 2 else "Cx1x1")


def _learned_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    o = _const_shape(a, shapes)
    if a["per"] == "channel":
        if len(o) not in (2, 3):
            raise ShapeError(f"a learned affine per channel needs an image (C x H x W) or tokens (S x D), got a "
                             f"flat {fmt(o)}: use per: tensor")
        held = _held(a, o)
        if len(o) == 3 and held == "1x1xC" or len(o) == 2 and held == "Cx1x1":
            where = "an image" if len(o) == 3 else "a sequence of tokens"
            raise ShapeError(f"a {held} parameter does not scale {where} {fmt(o)} per channel")
    return o


def _count(a: Attrs, o: Shape) -> int:
    return 1 if a["per"] == "tensor" else features(o)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    return Params(_count(a, o), 0) if a["scale"] == "learned" else Params(0, _count(a, o))


def _steps(a: Attrs) -> int:
    """Element operations per element: a multiplication unless the scale is the number 1, an addition
    unless the bias is the number 0."""
    return int(a["scale"] != 1) + int(a["bias"] != 0)


# ----------------------------------------------------------------------------- torch code


def _number(v: Any) -> str:
    return repr(float(v))


def _size(a: Attrs, o: tuple) -> str:
    return {"1": "1", "C": f"{features(o)}", "Cx1x1": f"{features(o)}, 1, 1", "1x1xC": f"1, 1, {features(o)}"}[_held(a, o)]


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return f"nn.Parameter(torch.{'ones' if a['scale'] == 'learned' else 'zeros'}({_size(a, out)}))"


def _formula(a: Attrs, x: str, m: str) -> str:
    scale = m if a["scale"] == "learned" else _number(a["scale"])
    bias = m if a["bias"] == "learned" else _number(a["bias"])
    if a["scale"] == 1:
        return x if a["bias"] == 0 else f"{x} + {bias}"
    # the sum over the product it made (no second map): the values of scale * x + bias
    return f"{scale} * {x}" if a["bias"] == 0 else f"({scale} * {x}).add_({bias})"


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    return _formula(a, x[0], m)


def _shaped_call(a: Attrs, x: list[str], m: str, ip: bool, ins: list) -> str:
    """The parameter as its module holds it; a vector of C on an image viewed as C x 1 x 1."""
    flat = a["per"] == "channel" and len(ins[0]) == 3 and a["held"] == "C"
    return _formula(a, x[0], f"{m}.view(-1, 1, 1)" if flat else m)


# ----------------------------------------------------------------------------- memory


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    # a learned scale's gradient is the input times the output's: autograd keeps the input; a number, a
    # learned bias: nothing
    return (("input",), 0) if a["scale"] == "learned" else ((), 0)


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    # a learned parameter's gradient is computed at the map's size before it is summed down to its shape
    return math.prod(o) if a["scale"] == "learned" else 0


# ----------------------------------------------------------------------------- import


def _const_fields(how: str, c: float, first: bool) -> dict | None:
    """``x * c``, ``c * x``, ``x + c``, ``x - c``, ``c - x``, ``x / c`` (``first``: the number comes before the
    tensor): an affine map, or None, the input itself, where the number changes nothing (FastViT's
    ``0 + conv(x)``: the sum of its branches starts at the int 0). The torch call's number and an ONNX
    node's constant alike."""
    need(math.isfinite(c), f"an operation with the number {c!r}")
    if how == "mul":
        scale, bias = c, 0.0
    elif how == "add":
        scale, bias = 1.0, c
    elif how == "sub":
        scale, bias = (-1.0, c) if first else (1.0, -c)
    else:
        need(not first and c != 0 and math.frexp(c)[0] in (0.5, -0.5),
             f"a division by {c!r} (archc's affine multiplies: x / c is x * (1 / c) only where c is a "
             "power of two)" if not first else "a number divided by a tensor")
        scale, bias = 1.0 / c, 0.0
    if scale == 1 and bias == 0:
        return None
    return {"op": KIND, **({"scale": scale} if scale != 1 else {}), **({"bias": bias} if bias != 0 else {})}


def _from_scalar(learned: str) -> Any:
    """A parameter of one number times a layer's output, or added to it (HGNetV2's LearnableAffineBlock:
    ``self.scale * x + self.bias``, two layers, each holding its parameter)."""
    def layer(s: Any) -> dict:
        shape = tuple(s.arg.get("param_shape", ()))
        need(shape == (1,), f"a parameter of shape {list(shape)} (archc's affine holds one number as [1])")
        return {"op": KIND, learned: "learned", "per": "tensor"}
    return layer


def _from_addcmul(s: Any) -> dict:
    """``torch.addcmul(beta, alpha, x)`` with ``alpha`` and ``beta`` parameters of the module that calls it,
    one per feature (ResMLP's Affine): a learned affine whose parameters keep their names and shapes."""
    params, at = s.arg.get("params", {}), s.arg.get("at")
    need(at in (1, 2) and set(params) == {0, 3 - at}, "an addcmul whose tensor is not a product's factor")
    need(s.arg.get("value", 1) == 1, f"value={s.arg.get('value')} (archc's affine is scale * x + bias)")
    (bias, bias_shape), (scale, scale_shape) = params[0], params[3 - at]
    need(bias_shape == scale_shape, f"a scale of shape {list(scale_shape)} and a bias of {list(bias_shape)}")
    x = s.shapes[0]
    held = {(1,): "1", (features(x),): "C"}.get(scale_shape)
    if len(x) == 2 and scale_shape == (1, 1, x[1]):
        held = "1x1xC"
    elif len(x) == 3 and scale_shape == (x[0], 1, 1):
        held = "Cx1x1"
    need(held is not None, f"parameters of shape {list(scale_shape)} on {fmt(x)} (archc's affine holds one "
                           "number, or one per channel)")
    fields = {"op": KIND, "scale": "learned", "bias": "learned", "per": "tensor" if held == "1" else "channel"}
    if held not in ("1", "C" if len(x) == 2 else "Cx1x1"):
        fields["held"] = held
    if [scale, bias] != ["scale", "bias"]:
        fields["names"] = [scale, bias]
    return fields


_CONST = {"mul": ("fn:mul", "fn:imul", "method:mul", "method:mul_"),
          "add": ("fn:add", "fn:iadd", "method:add", "method:add_"),
          "sub": ("fn:sub", "fn:isub", "method:sub", "method:sub_"),
          "div": ("fn:truediv", "fn:itruediv", "method:div", "method:div_")}


OP = Op(
    layers=(LayerOp(Affine, _lower, main=LEARNED),),
    kinds=(
        OpDef(KIND, _const_shape, attrs=("scale", "bias"),
              elementwise=lambda a, i, o: _steps(a) * math.prod(o),
              passthrough=lambda a, i: _steps(a) == 0,
              saves=_saves,
              latency=per_map(("add",), lambda a: "add", elements),
              torch=TorchCode(None, _call), style=Style("box", "#f5f5f5")),
        OpDef(LEARNED, _learned_shape, attrs=("scale", "bias", "per", "held"), params=_params,
              elementwise=lambda a, i, o: _steps(a) * math.prod(o),
              saves=_saves, backward_workspace=_backward_workspace,
              latency=per_map(("add",), lambda a: "add", elements),
              # the module's attribute is the parameter itself (no submodule): its path is a state_dict key
              torch=TorchCode(_module, _call, shaped_call=_shaped_call), style=Style("box", "#f5f5f5")),
    ),
    # a number and a layer's output (the importer's "const:" keys: the call's name after the colon); a one-number
    # parameter of the module ("scalar:"); torch.addcmul of two of its parameters ("params:")
    from_torch={
        **{f"const:{key.split(':')[1]}": FromTorch(KIND, lambda s, how=how: _const_fields(how, s.arg["value"],
                                                                                          s.arg.get("first", False)))
           for how, keys in _CONST.items() for key in keys},
        "scalar:mul": FromTorch(LEARNED, _from_scalar("scale")), "scalar:mul_": FromTorch(LEARNED, _from_scalar("scale")),
        "scalar:add": FromTorch(LEARNED, _from_scalar("bias")), "scalar:add_": FromTorch(LEARNED, _from_scalar("bias")),
        "params:addcmul": FromTorch(LEARNED, _from_addcmul, ("value",)),
    },
    # a one-number constant and a layer's output (the ONNX reader's constant step); a C x 1 x 1 parameter added to
    # an image, a D one to a sequence (its parameter step: a learned affine's bias, as archc exports it)
    from_onnx={**{f"const:{op}": FromOnnx(lambda n, how=how: _const_fields(how, n.attrs["value"], n.attrs["first"]))
                  for op, how in (("Mul", "mul"), ("Add", "add"), ("Sub", "sub"), ("Div", "div"))},
               "bias:Add": FromOnnx(lambda n: {"op": KIND, "bias": "learned", "per": "channel"})},
)
