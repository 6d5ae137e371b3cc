"""The IR kind of timm's MaxViT and CoAtNet attention (``window_attention`` with ``layout: maxxvit`` or
``maxxvit_2d`` lowers to it: its own kind, since its torch code is another helper class): its shape, cost,
memory and code, declared here for :mod:`.window_attention`."""

from __future__ import annotations

import math

from ._base import Attrs, Kernel, Latency, OpDef, Params, Shape, ShapeError, Style, TorchCode, Window, fmt, image

MAXXVIT = "partition_attention"
MAXXVIT_RUNTIME = "archcompiler.backends.torch.runtime:PartitionAttention"


def _maxxvit_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """timm's partition attention keeps the map's size and gives ``out`` channels (default its own): the
    window (or grid) must tile the map, with no padding (timm's partition asserts it), and the heads divide
    its channels."""
    c, h, w = image("window_attention", shapes)
    win, what = a["window"], "grid" if a["grid"] else "window"
    if h % win or w % win:
        raise ShapeError(f"{what} {win}x{win} does not tile the map {fmt(shapes[0])}: {h}x{w} is not a multiple of "
                         f"{win} (timm's partition pads nothing)")
    if win < 2:
        raise ShapeError(f"a {what} of 1x1 attends each position to itself alone: window must be 2 or more")
    if c % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the {c} channels of the map {fmt(shapes[0])}: "
                         f"each head takes {c} / {a['heads']} features")
    return (a["out"] or c, h, w)


def _maxxvit_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (C -> 3C) and proj (C -> out), with biases; rel_pos's (2W - 1)^2 x heads bias table; the buffer:
    its W^4 index (outside the state_dict, as timm's)."""
    c, out, win = i[0][0], o[0], a["window"]
    return Params(3 * c * c + c * out + (2 * win - 1) ** 2 * a["heads"], 3 * c + out, win ** 4)


def _maxxvit_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """qkv (3 N C^2 over the map's N positions) and proj (N C out); QK^T and the scores times V within each
    window (N W^2 C each)."""
    c, n = i[0][0], o[1] * o[2]
    return 3 * n * c * c + n * c * o[0] + 2 * n * a["window"] ** 2 * c


def _maxxvit_scores(a: Attrs, o: Shape) -> int:
    return a["heads"] * o[1] * o[2] * a["window"] ** 2


def _maxxvit_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """The most runtime.py's PartitionAttention holds at once beyond its input and output, for a batch
    (measured: tests/test_timm_maxxvit.py). With M the input's elements and O the output's: the windows
    (a copy, M), the projection q, k and v are views of (3M), the position bias (heads x W^4, once) and,
    from scaled_dot_product_attention's fused kernel, its output (M) and log-sum-exp per head and position;
    then the heads' output and proj's (M + O); then proj's and, where the way back to the map is no view,
    the map (2O). The windows' order is the map's where one window spans the width (a grid: the whole map):
    the way back is a view then (the windows are a copy whatever the input's memory layout)."""
    c, h, w = i[0]
    m, out, win = batch * c * h * w, batch * math.prod(o), a["window"]
    in_order = h == w == win if a["grid"] else w == win
    attention = 5 * m + a["heads"] * win ** 4 + batch * a["heads"] * h * w
    return max(attention, m + out, out if in_order else 2 * out) - out


def _maxxvit_saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (measured: tests/test_timm_maxxvit.py): the windows (qkv's input, a copy),
    scaled_dot_product_attention's math path (its mask needs a gradient: the fused kernel takes none): q and
    k scaled (2M), the softmax's scores, and v, which its batched product reads as a view of the projection
    (3M) with one head, and as a copy (M) with more (one window of one sample aside: a view again); and
    proj's input (M)."""
    m = math.prod(i[0])
    return (), (7 if a["heads"] == 1 else 5) * m + _maxxvit_scores(a, o)


def _maxxvit_backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward, the scores' gradient (S, softmax's backward) beside the heads' output gradient in the
    batched products' layout (M): an estimate, not a measurement (scaled_dot_product_attention's math path
    frees its saved tensors while it runs and copies q, k, v's gradients into the projection's; on small
    maps measured within about 10% of a training step's peak, tests/test_timm_maxxvit.py)."""
    return math.prod(i[0]) + _maxxvit_scores(a, o)


def _maxxvit_detail(a: Attrs) -> str:
    return f"{a['heads']} heads, {'grid' if a['grid'] else 'window'} {a['window']} (timm)"


PARTITION_KIND = OpDef(
    MAXXVIT, _maxxvit_shape, attrs=("heads", "window", "grid", "conv", "out", "dropout"),
    params=_maxxvit_params, macs=_maxxvit_macs, elementwise=lambda a, i, o: 3 * _maxxvit_scores(a, o),
    depth="params", window=lambda a, i: Window((a["window"],) * 2, (1, 1), ((a["window"] - 1) // 2,) * 2),
    batch_workspace=_maxxvit_workspace, saves=_maxxvit_saves, backward_workspace=_maxxvit_backward_workspace,
    latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (i[0][0], a["heads"], a["window"] ** 2),
                                                           _maxxvit_macs(a, i, o))),
    torch=TorchCode(lambda a, ins, out: f"PartitionAttention({ins[0][0]}, {a['heads']}, {a['window']}, {a['grid']}, "
                                        f"{a['conv']}, {out[0]}, {a['dropout']!r})",
                    lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)", MAXXVIT_RUNTIME),
    style=Style("box", "#fce4d6", _maxxvit_detail))
