"""The op table: every primitive op of the IR, declared once.

Each :class:`OpDef` says, for one op kind, how its output shape follows from its inputs (with
PyTorch's exact formulas), how many parameters it has, how many multiply-accumulates (MACs) and
element operations it costs, and how it moves the receptive field.  Passes dispatch through
:data:`OPS`; nothing else in archc branches on op kinds for these facts.

Shapes are per sample: ``(C, H, W)`` for images, ``(F,)`` after flattening.
Cost convention: one multiply-add = 1 MAC; FLOPs = 2 x MACs (as torch's FlopCounterMode counts
conv and linear).  Memory-bound ops (pooling, normalisation, activation, concat, add) are counted
apart, as element operations, never as MACs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..util import shape_text

Shape = tuple[int, ...]
Attrs = dict[str, Any]


class ShapeError(ValueError):
    """An op cannot take the shapes it is given; the message lists them."""


@dataclass(frozen=True)
class Params:
    weights: int = 0
    biases: int = 0
    buffers: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.biases


@dataclass(frozen=True)
class Window:
    """How an op slides over H and W: kernel, stride, padding before, dilation (per axis)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class OpDef:
    kind: str
    shape: Callable[[Attrs, list[Shape]], Shape]
    params: Callable[[Attrs, list[Shape], Shape], Params] = lambda a, i, o: Params()
    macs: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    elementwise: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: math.prod(o)
    window: Callable[[Attrs, list[Shape]], Window | None] = lambda a, i: None
    # transient memory while the op runs, beyond its inputs and output, in float32 elements
    # (what PyTorch's kernel allocates and frees again: measured, see tests/test_memory.py)
    workspace: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    # what autograd keeps for the backward pass in training: "input" and/or "output" (the tensors
    # themselves, shared with the forward) and extra float32 elements (indices, masks, temporaries)
    saves: Callable[[Attrs, list[Shape], Shape], tuple[tuple[str, ...], int]] = lambda a, i, o: ((), 0)
    depth: str | None = None            # "params" (conv, linear) or "pooling": counted in depth
    patch: Callable[[Attrs], str] = lambda a: ""   # Table 1's "patch size/stride" column


def _image(kind: str, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    s = shapes[0]
    if len(s) != 3:
        raise ShapeError(f"{kind} needs an image (H x W x C) input, got a flat {_fmt(s)}")
    return s


def _fmt(shape: Shape) -> str:
    return shape_text(shape)


def conv_padding(a: Attrs) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding (before, after) per axis; 'same' pads like PyTorch (the extra pixel after)."""
    pad = a["padding"]
    if pad == "same":
        out = []
        for k, d in zip(a["kernel"], a["dilation"]):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return out[0], out[1]
    if pad == "valid":
        return (0, 0), (0, 0)
    return (pad[0], pad[0]), (pad[1], pad[1])


def _conv_out(size: int, k: int, s: int, before: int, after: int, d: int, ceil: bool = False) -> int:
    span = size + before + after - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + before:
        out -= 1           # PyTorch: the last window must start inside the input or left padding
    return out


def _spatial(kind: str, a: Attrs, h: int, w: int, ceil: bool = False) -> tuple[int, int]:
    pads = conv_padding(a) if kind == "conv2d" else ((a["padding"][0],) * 2, (a["padding"][1],) * 2)
    dil = a.get("dilation", (1, 1))
    oh = _conv_out(h, a["kernel"][0], a["stride"][0], *pads[0], dil[0], ceil)
    ow = _conv_out(w, a["kernel"][1], a["stride"][1], *pads[1], dil[1], ceil)
    if oh < 1 or ow < 1:
        raise ShapeError(f"output would be {oh}x{ow}: the {h}x{w} input is too small for kernel "
                         f"{a['kernel'][0]}x{a['kernel'][1]}, stride {a['stride'][0]}")
    return oh, ow


def _conv_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("conv", shapes)
    if c % a["groups"] or a["out_channels"] % a["groups"]:
        raise ShapeError(f"groups={a['groups']} must divide both the input channels ({c}) and the "
                         f"output channels ({a['out_channels']})")
    return (a["out_channels"], *_spatial("conv2d", a, h, w))


def _conv_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    kh, kw = a["kernel"]
    weights = a["out_channels"] * (i[0][0] // a["groups"]) * kh * kw
    return Params(weights, a["out_channels"] if a["bias"] else 0)


def _conv_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    kh, kw = a["kernel"]
    return math.prod(o) * (i[0][0] // a["groups"]) * kh * kw


def _conv_window(a: Attrs, i: list[Shape]) -> Window:
    (ph, _), (pw, _) = conv_padding(a)
    return Window(a["kernel"], a["stride"], (ph, pw), a["dilation"])


def _pool_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("pool", shapes)
    return (c, *_spatial("pool", a, h, w, a["ceil_mode"]))


def _pool_window(a: Attrs, i: list[Shape]) -> Window:
    return Window(a["kernel"], a["stride"], a["padding"])


def _adaptive_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("adaptive pool", shapes)
    return (c, *a["output"])


def _adaptive_window(a: Attrs, i: list[Shape]) -> Window:
    _, h, w = i[0]
    oh, ow = a["output"]
    k = (-(-h // oh), -(-w // ow))
    s = (max(1, h // oh), max(1, w // ow))
    return Window(k, s, (0, 0))


def _same(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        if len(shapes) != 1:
            raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
        return shapes[0]
    return rule


def _channels_same(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        _image(kind, shapes)
        return shapes[0]
    return rule


def _linear_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1 or len(shapes[0]) != 1:
        raise ShapeError(f"linear needs a flat input, got {', '.join(_fmt(s) for s in shapes)}")
    return (a["out_features"],)


def _flatten_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"flatten takes one input, got {len(shapes)}")
    return (math.prod(shapes[0]),)


def _flatten_window(a: Attrs, i: list[Shape]) -> Window | None:
    if len(i[0]) != 3:
        return None
    _, h, w = i[0]
    return Window((h, w), (1, 1), (0, 0))


def _concat_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) != 1:
        raise ShapeError("concat needs inputs of the same height and width, got "
                         + ", ".join(_fmt(s) for s in shapes))
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _add_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(set(shapes)) != 1:
        raise ShapeError("add needs inputs of one shape, got " + ", ".join(_fmt(s) for s in shapes))
    return shapes[0]


def _bn_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    c = o[0]
    return Params(c, c, 2 * c + 1)   # running mean, running var, num_batches_tracked


def _linear_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    return Params(i[0][0] * a["out_features"], a["out_features"] if a["bias"] else 0)


def _lrn_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """F.local_response_norm holds, besides its input and output, at most two full-size
    temporaries ((k + alpha * avg)^beta is built in steps) or x^2 with its channel-padded copy
    (C + size - 1 channels), whichever is larger."""
    c, h, w = o
    return max(2 * c, c + a["size"] - 1) * h * w


def _channel_slice_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("channel_slice", shapes)
    if not 0 <= a["start"] < a["end"] <= c:
        raise ShapeError(f"channels {a['start']}:{a['end']} are not within the input's {c}")
    return (a["end"] - a["start"], h, w)


def _saves_activation(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    # relu, relu6, leaky_relu, sigmoid and tanh differentiate from their result; gelu and silu from the input
    return (("input",) if a["kind"] in ("gelu", "silu") else ("output",)), 0


def _saves_lrn(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    c, h, w = o        # x^2 padded by size - 1 channels, its window average, (k + alpha * avg)^beta
    return ("input",), (c + a["size"] - 1) * h * w + 2 * c * h * w


def _kxs(a: Attrs) -> str:
    (kh, kw), (sh, _) = a["kernel"], a["stride"]
    return f"{kh}x{kw}/{sh}"


OPS: dict[str, OpDef] = {op.kind: op for op in [
    OpDef("input", shape=lambda a, i: tuple(a["shape"]), elementwise=lambda a, i, o: 0),
    OpDef("conv2d", shape=_conv_shape, params=_conv_params, macs=_conv_macs,
          elementwise=lambda a, i, o: 0, window=_conv_window, depth="params", patch=_kxs,
          saves=lambda a, i, o: (("input",), 0)),
    OpDef("batch_norm2d", shape=_channels_same("batch_norm"), params=_bn_params,
          saves=lambda a, i, o: (("input",), 2 * o[0])),
    OpDef("activation", shape=_same("activation"), saves=_saves_activation),
    OpDef("max_pool2d", shape=_pool_shape, window=_pool_window, depth="pooling", patch=_kxs,
          elementwise=lambda a, i, o: math.prod(o) * a["kernel"][0] * a["kernel"][1],
          workspace=lambda a, i, o: 2 * math.prod(o),         # int64 indices, dropped at once in eval
          saves=lambda a, i, o: (("input",), 2 * math.prod(o))),   # ... kept for backward in training
    OpDef("avg_pool2d", shape=_pool_shape, window=_pool_window, depth="pooling", patch=_kxs,
          elementwise=lambda a, i, o: math.prod(o) * a["kernel"][0] * a["kernel"][1],
          saves=lambda a, i, o: (("input",), 0)),
    OpDef("adaptive_avg_pool2d", shape=_adaptive_shape, window=_adaptive_window, depth="pooling",
          elementwise=lambda a, i, o: math.prod(i[0]), saves=lambda a, i, o: (("input",), 0)),
    OpDef("lrn", shape=_channels_same("lrn"), elementwise=lambda a, i, o: math.prod(o) * a["size"],
          workspace=_lrn_workspace, saves=_saves_lrn),
    OpDef("dropout", shape=_same("dropout"), saves=lambda a, i, o: ((), math.prod(o))),   # the mask
    OpDef("flatten", shape=_flatten_shape, window=_flatten_window, elementwise=lambda a, i, o: 0),
    OpDef("linear", shape=_linear_shape, params=_linear_params, depth="params",
          macs=lambda a, i, o: i[0][0] * a["out_features"], elementwise=lambda a, i, o: 0,
          saves=lambda a, i, o: (("input",), 0)),
    OpDef("softmax", shape=_same("softmax"), elementwise=lambda a, i, o: 3 * math.prod(o)),
    OpDef("concat", shape=_concat_shape),
    OpDef("add", shape=_add_shape, elementwise=lambda a, i, o: (len(i) - 1) * math.prod(o)),
    OpDef("identity", shape=_same("identity"), elementwise=lambda a, i, o: 0),
    # made by the fuse_siblings pass only: channels [start, end) of its input, a view
    OpDef("channel_slice", shape=_channel_slice_shape, elementwise=lambda a, i, o: 0),
]}
