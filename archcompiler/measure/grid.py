"""The grid ``archc calibrate`` times: for each kind of kernel a network is made of (convolutions 1x1,
3x3, 5x5, 7x7/2 and depthwise, fully connected layers, the sequence kernels, and the element-wise ops:
ReLU, BatchNorm, pooling, LRN, concatenation, addition), representative shapes at batch 1 and 8, in
both memory layouts, each called the way generated modules call it, and a minimal shape that gives the
kind's fixed cost. :mod:`archcompiler.measure.calibrate` decides how each is timed (warm, cold,
relative to a reference kernel, checked against the peak)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..backends.torch.runtime import conv_act
from ..passes.machine import LAYOUTS

# The grid of shapes measured for each kind: channels from 8 to 832 and maps from 4x4 to 56x56
# (224 for the 7x7/2 stem), as in GoogLeNet (at full and reduced width), ResNet and VGG; batch 1
# and 8. Large channel counts go with small maps in these networks, so shapes with more than
# MAX_MAP input values or MAX_MACS multiply-adds per image are left out (they would take most of the
# time and predict nothing).
CONVS = {"conv1x1": (1, 1, 0), "conv3x3": (3, 1, 1), "conv5x5": (5, 1, 2), "conv7x7s2": (7, 2, 3),
         "depthwise": (3, 1, 1)}
CHANNELS = [(8, 8), (16, 32), (64, 64), (192, 128), (512, 256), (832, 384),
            (192, 16), (512, 48)]           # and the narrow reduce layers of inception modules
SPATIAL = [4, 7, 14, 28, 56]
MAX_MAP = 192 * 56 * 56
MAX_MACS = 1.2e9
LARGE_MAPS = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56)]  # VGG
STEM = [(3, 64, 224), (3, 64, 112), (3, 16, 64), (3, 32, 32)]
LINEARS = [(256, 10), (1024, 1000), (2048, 1024), (4096, 4096), (25088, 4096)]
# (D, out or heads, tokens) of the sequence kernels: ViT's Base at 224 (197 tokens) and smaller, down to
# a few tokens (a 96 x 96 image in patches of 32: 10), where a product reads its whole weight matrix for
# a handful of rows and runs several times slower per multiply-add (ViT-B/32 at 96 x 96, one image, was
# predicted at a quarter of its measured time from the 50-token shapes alone)
MATMULS = [(64, 256, 64), (192, 768, 197), (768, 3072, 197), (768, 768, 50), (768, 3072, 10), (768, 768, 10),
           (192, 768, 17)]
ATTENTIONS = [(64, 4, 64), (192, 3, 197), (768, 12, 197), (768, 12, 50), (768, 12, 10), (192, 3, 17)]
SIZES = [(16, 32), (48, 16), (128, 8), (256, 4), (64, 56), (192, 28), (480, 14), (832, 7), (256, 28), (512, 14),
         (32, 112)]
QUICK = {(64, 64, 28), (192, 128, 14), (192, 192, 14), (3, 64, 112), (3, 16, 64)}   # --quick: mid-sized shapes only
QUICK_SIZES = [(64, 56), (192, 28)]
ELEMENTWISE_OPS = {     # the element-wise kinds: their call, and their work (element operations) for channels and map size
    "relu": (lambda x: F.relu(x, inplace=True), lambda c, s: c * s * s),
    "batch_norm": (None, lambda c, s: c * s * s),
    "max_pool": (lambda x: F.max_pool2d(x, 3, 1, 1), lambda c, s: c * s * s * 9),
    "max_pool_s2": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
                    lambda c, s: c * math.ceil(s / 2) ** 2 * 9),
    "avg_pool": (lambda x: F.avg_pool2d(x, 3, 1, 1), lambda c, s: c * s * s * 9),
    "adaptive_pool": (lambda x: F.adaptive_avg_pool2d(x, 1), lambda c, s: c * s * s),
    "lrn": (lambda x: F.local_response_norm(x, 5), lambda c, s: c * s * s * 5),
    "concat": (lambda x: torch.cat(x, 1), lambda c, s: c * s * s),
    "add": (lambda x: x[0] + x[1], lambda c, s: c * s * s),
}
FIXED = (8, 2)          # channels and map size of the minimal shape that gives each kind's fixed cost


def conv_shapes(kind: str, quick: bool = False) -> list[tuple[int, int, int]]:
    """(in channels, out channels, map size) measured for a kind of convolution."""
    if kind == "conv7x7s2":
        shapes = STEM
    else:
        k = CONVS[kind][0]
        shapes = [(ci, ci if kind == "depthwise" else co, s) for ci, co in CHANNELS for s in SPATIAL
                  if ci * s * s <= MAX_MAP and ci * (1 if kind == "depthwise" else co) * k * k * s * s <= MAX_MACS]
        if kind == "conv3x3":
            shapes += LARGE_MAPS
    return [shape for shape in shapes if shape in QUICK] if quick else shapes


Timed = Callable[[Callable[[], Any], float, str], float | None]


Kernels = dict[str, list[list[float]]]      # key -> [[batch, in, out, size, work, seconds], ...]
Fixed = dict[str, float | None]             # key -> seconds of the statement at a minimal shape


def measure_grid(dev: torch.device, timed: Timed, quick: bool,
                 say: Callable[[str], None]) -> tuple[dict[str, list[list]], dict[str, float | None]]:
    """One pass over the grid: {kind/layout: [[batch, in, out, size, work, time], ...]} and each
    kind's fixed cost, times as ``timed(fn, operations, label)`` gives them (operations: FLOPs of a
    compute kernel, element operations of the others, what the calibration's peak bounds; label: the
    shape, in words)."""
    kernels: Kernels = {}
    fixed: Fixed = {}
    for layout in LAYOUTS:
        for kind in CONVS:
            say(f"{kind} ({layout})")
            _convs(dev, timed, quick, kind, layout, kernels, fixed)
    say("linear")
    _linears(dev, timed, quick, kernels, fixed)
    for name in ("matmul", "attention"):
        say(name)
        _sequences(dev, timed, quick, name, kernels, fixed)
    for layout in LAYOUTS:
        for name in ELEMENTWISE_OPS:
            say(f"{name} ({layout})")
            _elementwise(dev, timed, quick, name, layout, kernels, fixed)
    return kernels, fixed


def _memory_format(layout: str) -> torch.memory_format:
    """torch's memory format of a profile layout: ``nchw`` (the ordinary module's) or channels-last."""
    return torch.contiguous_format if layout == "nchw" else torch.channels_last


def _convs(dev: torch.device, timed: Timed, quick: bool, kind: str, layout: str, kernels: Kernels,
           fixed: Fixed) -> None:
    """A kind of convolution in one layout, called as generated modules call it: a module call, or
    with channels-last (what --optimize generates) ``conv_act`` with its ReLU fused."""
    k, stride, pad = CONVS[kind]
    fmt = _memory_format(layout)
    points = []
    for cin, cout, size in [(FIXED[0], FIXED[0], FIXED[1])] + conv_shapes(kind, quick):
        groups = cin if kind == "depthwise" else 1
        conv = torch.nn.Conv2d(cin, cout, k, stride, pad, groups=groups).to(dev).to(memory_format=fmt)
        for batch in (1, 8):
            x = torch.randn(batch, cin, size, size, device=dev).to(memory_format=fmt)
            out = (size + 2 * pad - k) // stride + 1
            macs = batch * cout * out * out * (cin // groups) * k * k
            if layout == "nhwc":      # what --optimize generates: conv + ReLU fused
                def run(x=x, conv=conv):
                    return conv_act(x, conv, "relu")
            else:
                def run(x=x, conv=conv):
                    return conv(x)
            seconds = timed(run, 2 * macs, f"{kind}/{layout} {cin}->{cout} on {size}x{size}, batch {batch}")
            if size == FIXED[1] and cin == FIXED[0]:
                fixed[f"{kind}/{layout}"] = seconds
                break
            points.append([batch, cin, cout, size, macs, seconds])
    kernels[f"{kind}/{layout}"] = points


def _linears(dev: torch.device, timed: Timed, quick: bool, kernels: Kernels, fixed: Fixed) -> None:
    """Fully connected layers at batch 1, 8 and 32."""
    points = []
    for fin, fout in [(FIXED[0], FIXED[0])] + (LINEARS[:2] if quick else LINEARS):
        lin = torch.nn.Linear(fin, fout).to(dev)
        for batch in (1, 8, 32):
            x = torch.randn(batch, fin, device=dev)
            seconds = timed(lambda lin=lin, x=x: lin(x), 2 * batch * fin * fout, f"linear {fin}->{fout}, batch {batch}")
            if fin == FIXED[0]:
                fixed["linear"] = seconds
                break
            points.append([batch, fin, fout, 1, batch * fin * fout, seconds])
    kernels["linear"] = points


def _sequences(dev: torch.device, timed: Timed, quick: bool, name: str, kernels: Kernels, fixed: Fixed) -> None:
    """The sequence kernels: ``matmul`` (a linear layer over tokens) or ``attention`` (torch's
    multi-head attention, in inference)."""
    grid = MATMULS if name == "matmul" else ATTENTIONS
    points = []
    for d, other, tokens in [(FIXED[0], 2 if name == "attention" else FIXED[0], FIXED[1])] + (grid[:2] if quick else grid):
        if name == "matmul":
            mod = torch.nn.Linear(d, other).to(dev)
            macs = tokens * d * other
        else:
            mod = torch.nn.MultiheadAttention(d, other, batch_first=True).to(dev).eval()
            macs = 4 * tokens * d * d + 2 * tokens * tokens * d
        for batch in (1, 8):
            x = torch.randn(batch, tokens, d, device=dev)
            if name == "matmul":
                def run(mod=mod, x=x):
                    return mod(x)
            else:
                def run(mod=mod, x=x):
                    with torch.no_grad():
                        return mod(x, x, x, need_weights=False)[0]
            seconds = timed(run, 2 * batch * macs, f"{name} {d}, {other}, {tokens} tokens, batch {batch}")
            if d == FIXED[0]:
                fixed[name] = seconds
                break
            points.append([batch, d, other, tokens, batch * macs, seconds])
    kernels[name] = points


def _elementwise(dev: torch.device, timed: Timed, quick: bool, name: str, layout: str, kernels: Kernels,
                 fixed: Fixed) -> None:
    """An element-wise kind in one layout; a concatenation and an addition take distinct inputs, as
    in a network (4 branches, 2 addends)."""
    fn, work = ELEMENTWISE_OPS[name]
    fmt = _memory_format(layout)
    points = []
    for c, s in [FIXED] + (QUICK_SIZES if quick else SIZES):
        bn = torch.nn.BatchNorm2d(c).to(dev).eval() if name == "batch_norm" else None
        for batch in (1, 8):
            if name in ("concat", "add"):
                x = [torch.randn(batch, c // 4 if name == "concat" else c, s, s, device=dev).to(
                    memory_format=fmt) for _ in range(4 if name == "concat" else 2)]
            else:
                x = torch.randn(batch, c, s, s, device=dev).to(memory_format=fmt)

            def op(fn=fn, x=x, bn=bn):
                return bn(x) if bn is not None else fn(x)
            seconds = timed(op, batch * work(c, s), f"{name}/{layout} {c} channels on {s}x{s}, batch {batch}")
            if (c, s) == FIXED:
                fixed[f"{name}/{layout}"] = seconds
                break
            points.append([batch, c, c, s, batch * work(c, s), seconds])
    kernels[f"{name}/{layout}"] = points
