"""What max_pool and avg_pool share: their fields, shape, window and torch code (not an op)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase, NonNegPair, Pair, pair
from . import _onnx
from ._base import Attrs, Prim, Shape, Window, image, need, one, spatial, t2


class Pool(LayerBase):
    kernel: Pair
    stride: Pair | None = Field(None, description="default: the kernel size")
    padding: NonNegPair = 0
    ceil_mode: Bool = False

    @model_validator(mode="after")
    def _pad_le_half_kernel(self) -> Pool:
        k, p = pair(self.kernel), pair(self.padding)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"padding {self.padding} is more than half the kernel {self.kernel} "
                             "(PyTorch refuses this)")
        return self

    @classmethod
    def word_hint(cls, op: str, key: str, word: str) -> tuple[str, str] | None:
        if key == "padding" and word in ("same", "valid"):
            return (f"{op} padding takes a number of pixels (or [h, w]), not {word!r}",
                    "'valid' is padding 0; PyTorch's pooling has no 'same': with stride 1 and an odd kernel "
                    "it is (kernel - 1) / 2, e.g. kernel 3, padding 1")
        return None

    def stride_pair(self) -> tuple[int, int]:
        return pair(self.kernel if self.stride is None else self.stride)


def lower(kind: str) -> Callable[[Any], list[Prim]]:
    def rule(s: Any) -> list[Prim]:
        attrs = {"kernel": pair(s.kernel), "stride": s.stride_pair(), "padding": pair(s.padding), "ceil_mode": s.ceil_mode}
        if hasattr(s, "count_include_pad"):
            attrs["count_include_pad"] = s.count_include_pad
        return [("", kind, attrs)]
    return rule


def shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image("pool", shapes)
    return (c, *spatial(a, h, w, ((a["padding"][0],) * 2, (a["padding"][1],) * 2), a["ceil_mode"]))


def window(a: Attrs, i: list[Shape]) -> Window:
    return Window(a["kernel"], a["stride"], a["padding"])


def call(fn: str) -> Callable[..., str]:
    def code(a: Attrs, x: list[str], mod: str, inplace: bool) -> str:
        extra = ", ceil_mode=True" if a["ceil_mode"] else ""
        if not a.get("count_include_pad", True):     # average pooling's option
            extra += ", count_include_pad=False"
        return (f"F.{fn}({x[0]}, kernel_size={t2(a['kernel'])}, stride={t2(a['stride'])}, "
                f"padding={t2(a['padding'])}{extra})")
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


def from_onnx(name: str, average: bool = False) -> Callable[[Any], dict]:
    def layer(n: Any) -> dict:
        need("kernel_shape" in n.attrs, "no kernel_shape")
        _onnx.pairs(n, kernel_shape=1, strides=1, dilations=1)
        out = {"op": name, "kernel": _onnx.one(n.attrs["kernel_shape"]),
               "stride": _onnx.one(n.attrs.get("strides", [1, 1])), "padding": _onnx.pads(n)}
        need(_onnx.one(n.attrs.get("dilations", [1, 1])) == 1, "a dilated pooling")
        if n.attrs.get("ceil_mode"):
            out["ceil_mode"] = True
        if average and not n.attrs.get("count_include_pad", 0) and out["padding"] != 0:
            out["count_include_pad"] = False
        return out
    return layer
