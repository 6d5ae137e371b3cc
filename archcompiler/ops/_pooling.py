"""What max_pool and avg_pool share: their fields, shape, window and torch code (not an op)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase, NonNegPair, Pair, pair
from . import _onnx
from ._base import (
    Attrs,
    Prim,
    Shape,
    Window,
    image,
    need,
    one,
    pad_call,
    same_pads,
    spatial,
    t2,
)


class Pool(LayerBase):
    kernel: Pair
    stride: Pair | None = Field(None, description="default: the kernel size")
    padding: NonNegPair | Literal["same", "valid"] = Field(
        0, description="pixels on each side (a number or [h, w], at most half the kernel); 'valid' is 0; 'same' "
                       "pads so that the output is ceil(input / stride), as TensorFlow and Keras do (the odd pixel "
                       "after; the padding never counts: max pooling ignores it, average pooling averages what is "
                       "inside the map)")
    ceil_mode: Bool = False

    @model_validator(mode="after")
    def _pad_le_half_kernel(self) -> Pool:
        if isinstance(self.padding, str):
            if self.padding == "same" and self.ceil_mode:
                raise ValueError("padding 'same' already rounds the output up: leave ceil_mode false")
            return self
        k, p = pair(self.kernel), pair(self.padding)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"padding {self.padding} is more than half the kernel {self.kernel} "
                             "(PyTorch refuses this; 'same' pads as TensorFlow does)")
        return self

    def stride_pair(self) -> tuple[int, int]:
        return pair(self.kernel if self.stride is None else self.stride)


def lower(kind: str) -> Callable[[Any], list[Prim]]:
    def rule(s: Any) -> list[Prim]:
        padding = (0, 0) if s.padding == "valid" else s.padding if s.padding == "same" else pair(s.padding)
        attrs = {"kernel": pair(s.kernel), "stride": s.stride_pair(), "padding": padding, "ceil_mode": s.ceil_mode}
        if hasattr(s, "count_include_pad"):
            attrs["count_include_pad"] = s.count_include_pad
        return [("", kind, attrs)]
    return rule


def pads(a: Attrs, size: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(before, after) per axis of a map of ``size`` (H, W): TensorFlow's for 'same'."""
    if a["padding"] == "same":
        return same_pads(size[0], a["kernel"][0], a["stride"][0]), same_pads(size[1], a["kernel"][1], a["stride"][1])
    return (a["padding"][0],) * 2, (a["padding"][1],) * 2


def shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image("pool", shapes)
    return (c, *spatial(a, h, w, pads(a, (h, w)), a["ceil_mode"]))


def window(a: Attrs, i: list[Shape]) -> Window:
    (t, _), (left, _) = pads(a, tuple(i[0][1:3]))
    return Window(a["kernel"], a["stride"], (t, left))


def padded_before(a: Attrs, i: list[Shape]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """TensorFlow's 'same' pads that PyTorch's pooling cannot apply itself (unequal sides, or more than half
    the kernel): applied by an F.pad before it; None where the pooling pads itself."""
    if a["padding"] != "same":
        return None
    p = pads(a, tuple(i[0][1:3]))
    if all(before == after and before <= k // 2 for (before, after), k in zip(p, a["kernel"])):
        return None
    return p


def padded_gradient(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In the backward pass, the gradient of the padded copy (then cut to the map's): what it has beyond the
    input's (measured)."""
    extra = padded_elements(a, i)
    return extra - math.prod(i[0]) if extra else 0


def padded_elements(a: Attrs, i: list[Shape]) -> int:
    """The F.pad copy's elements (0 where the pooling pads itself)."""
    p = padded_before(a, i)
    if p is None:
        return 0
    c, h, w = i[0]
    return c * (h + sum(p[0])) * (w + sum(p[1]))


_MINUS_INFINITY = 'float("-inf")'


def call(fn: str) -> Callable[..., str]:
    """The pooling's torch call, for these input shapes: TensorFlow's 'same' where PyTorch can pad (equal sides)
    as its padding, else an F.pad before it: with -inf for max pooling (the padding never wins), with zeros
    for average pooling divided by the count of the map's pixels in each window (the padding never counts)."""
    def code(a: Attrs, x: list[str], mod: str, inplace: bool, ins: list | None = None) -> str:
        if ins is None:       # (the plain call: only where the padding is given in pixels)
            ins = [(0, 2 * a["padding"][0] + 1, 2 * a["padding"][1] + 1)]
        extra = ", ceil_mode=True" if a["ceil_mode"] else ""
        average = "count_include_pad" in a
        if not a.get("count_include_pad", True) or a["padding"] == "same" and average:
            extra += ", count_include_pad=False"
        window = f"kernel_size={t2(a['kernel'])}, stride={t2(a['stride'])}"
        p = padded_before(a, ins)
        if p is None:
            (t, _), (left, _) = pads(a, tuple(ins[0][1:3]))
            return f"F.{fn}({x[0]}, {window}, padding={t2((t, left))}{extra})"
        if not average:
            return f"F.{fn}({pad_call(x[0], p, _MINUS_INFINITY)}, {window})"
        _, h, w = ins[0]
        ones = pad_call(f"{x[0]}.new_ones(1, 1, {h}, {w})", p)
        return (f"F.{fn}({pad_call(x[0], p)}, {window}, divisor_override=1) / "
                f"F.{fn}({ones}, {window}, divisor_override=1)")
    return code


def from_torch(name: str) -> Callable[[Any], dict]:
    def layer(s: Any) -> dict:
        a = {k: getattr(s.module, k) for k in ("kernel_size", "stride", "padding", "ceil_mode", "dilation",
                                               "count_include_pad", "divisor_override", "return_indices")
             if hasattr(s.module, k)} if s.module is not None else dict(s.arg)
        need(one(a.get("dilation", 1)) == 1, "a dilated pooling")
        need(not a.get("return_indices") and a.get("divisor_override") is None, "return_indices or divisor_override")
        out = {"op": name, "kernel": one(a["kernel_size"]), "stride": one(a.get("stride") or a["kernel_size"]),
               "padding": one(a.get("padding", 0))}
        if a.get("ceil_mode"):
            out["ceil_mode"] = True
        if not a.get("count_include_pad", True):
            out["count_include_pad"] = False
        return out
    return layer


def _onnx_padding(n: Any, same_allowed: bool) -> Any:
    """A pooling node's pads as a spec's padding: symmetric pads as numbers; for max pooling, asymmetric ones
    that are TensorFlow's 'same' for this input (archc's and Keras's export of padding='same' at stride 2)."""
    p = [int(v) for v in n.attrs.get("pads", [0, 0, 0, 0])]
    if same_allowed and len(p) == 4 and p[:2] != p[2:] and n.shapes and len(n.shapes[0]) == 3:
        k = [int(v) for v in n.attrs["kernel_shape"]]
        s = [int(v) for v in n.attrs.get("strides", [1, 1])]
        if [(p[0], p[2]), (p[1], p[3])] == [same_pads(x, kk, ss) for x, kk, ss in zip(n.shapes[0][1:3], k, s)]:
            return "same"
    return _onnx.pads(n)


def from_onnx(name: str, average: bool = False) -> Callable[[Any], dict]:
    def layer(n: Any) -> dict:
        need("kernel_shape" in n.attrs, "no kernel_shape")
        _onnx.pairs(n, kernel_shape=1, strides=1, dilations=1)
        out = {"op": name, "kernel": _onnx.one(n.attrs["kernel_shape"]),
               "stride": _onnx.one(n.attrs.get("strides", [1, 1])), "padding": _onnx_padding(n, name == "max_pool")}
        need(_onnx.one(n.attrs.get("dilations", [1, 1])) == 1, "a dilated pooling")
        if n.attrs.get("ceil_mode"):
            out["ceil_mode"] = True
        if average and not n.attrs.get("count_include_pad", 0) and out["padding"] != 0:
            out["count_include_pad"] = False
        return out
    return layer
