"""Max and average pooling over a clip, C x T x H x W (``op: max_pool3d``, ``op: avg_pool3d``): nn.MaxPool3d and
nn.AvgPool3d, with a kernel, stride and padding of one number or [t, h, w] and ceil_mode, as torchvision's S3D
uses them (its 1x3x3/1x2x2 and 3x3x3 max pools, padded, and the final 2x7x7 average at stride 1)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase
from ._base import (
    Attrs,
    Kernel,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Prim,
    Shape,
    Style,
    TooSmall,
    TorchCode,
    Window,
    out_size,
)
from .conv3d import NonNegTriple, Triple, clip, triple

MAX = "max_pool3d"
AVG = "avg_pool3d"


class _Pool3d(LayerBase):
    kernel: Triple = Field(description="window size: one number or [t, h, w]")
    stride: Triple | None = Field(None, description="default: the kernel size")
    padding: NonNegTriple = Field(0, description="on each side: one number or [t, h, w], at most half the kernel")
    ceil_mode: Bool = Field(False, description="round each output size up, as torch's ceil_mode (a window that "
                                               "starts inside the input or its left padding counts)")

    @model_validator(mode="after")
    def _pad_le_half_kernel(self) -> _Pool3d:
        if any(p > k // 2 for p, k in zip(triple(self.padding), triple(self.kernel))):
            raise ValueError(f"padding {self.padding} is more than half the kernel {self.kernel} (PyTorch refuses "
                             "this)")
        return self


class MaxPool3d(_Pool3d):
    """Max pooling over windows of a clip (nn.MaxPool3d): the padding never wins."""

    op: Literal["max_pool3d"]


class AvgPool3d(_Pool3d):
    """Average pooling over windows of a clip (nn.AvgPool3d); the padding counts in the average unless
    count_include_pad is false."""

    op: Literal["avg_pool3d"]
    count_include_pad: Bool = True


def _lower(kind: str):
    def rule(s: _Pool3d) -> list[Prim]:
        attrs = {"kernel": triple(s.kernel), "stride": triple(s.kernel if s.stride is None else s.stride),
                 "padding": triple(s.padding), "ceil_mode": s.ceil_mode}
        if kind == AVG:
            attrs["count_include_pad"] = s.count_include_pad
        return [("", kind, attrs)]
    return rule


def _shape(kind: str):
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        c, *size = clip(kind, shapes)
        out = [out_size(n, k, s, p, p, 1, a["ceil_mode"])
               for n, k, s, p in zip(size, a["kernel"], a["stride"], a["padding"])]
        if min(out) < 1:
            raise TooSmall(f"output would be {'x'.join(map(str, out))}: the {'x'.join(map(str, size))} input is "
                           f"too small for kernel {'x'.join(map(str, a['kernel']))}, stride "
                           f"{'x'.join(map(str, a['stride']))}")
        return (c, *out)
    return rule


def _window(a: Attrs, i: list[Shape]) -> Window:
    """Over height and width (the receptive field is a frame's pixels; time is not in it)."""
    return Window(tuple(a["kernel"][1:]), tuple(a["stride"][1:]), tuple(a["padding"][1:]))


def _elements(a: Attrs, i: list[Shape], o: Shape) -> int:
    """One operation per element of each window."""
    return math.prod(o) * math.prod(a["kernel"])


def _patch(a: Attrs) -> str:
    return f"{'x'.join(map(str, a['kernel']))}/{'x'.join(map(str, a['stride']))}"


def _t3(v: tuple) -> str:
    return f"({v[0]}, {v[1]}, {v[2]})"


def _call(fn: str):
    def code(a: Attrs, x: list[str], m: str, ip: bool) -> str:
        extra = ", ceil_mode=True" if a["ceil_mode"] else ""
        if not a.get("count_include_pad", True):
            extra += ", count_include_pad=False"
        return (f"F.{fn}({x[0]}, kernel_size={_t3(a['kernel'])}, stride={_t3(a['stride'])}, "
                f"padding={_t3(a['padding'])}{extra})")
    return code


def _latency(name: str) -> Latency:
    """No profile measures a 3-D pooling: timed like the 2-D one, looked up by channels and the map's height."""
    return Latency((name,), lambda a, i, o: Kernel(name, (o[0], o[0], o[2]), _elements(a, i, o)))


OP = Op(
    layers=(LayerOp(MaxPool3d, _lower(MAX)), LayerOp(AvgPool3d, _lower(AVG))),
    kinds=(
        OpDef(MAX, _shape(MAX), attrs=("kernel", "stride", "padding", "ceil_mode"), window=_window,
              depth="pooling", patch=_patch, elementwise=_elements,
              # the int64 indices (two float32s per output element): made and dropped in evaluation, kept with
              # the input for backward in training (measured: tests/test_s3d.py)
              workspace=lambda a, i, o: 2 * math.prod(o), saves=lambda a, i, o: (("input",), 2 * math.prod(o)),
              latency=_latency("max_pool"), torch=TorchCode(None, _call("max_pool3d")),
              style=Style("box", "#fde0c5", _patch)),
        OpDef(AVG, _shape(AVG), attrs=("kernel", "stride", "padding", "ceil_mode", "count_include_pad"),
              window=_window, depth="pooling", patch=_patch, elementwise=_elements,
              # autograd keeps the input for avg_pool3d_backward, as for the 2-D one (measured: tests/test_s3d.py)
              saves=lambda a, i, o: (("input",), 0), latency=_latency("avg_pool"), torch=TorchCode(None, _call("avg_pool3d")),
              style=Style("box", "#fde0c5", _patch)),
    ),
)
