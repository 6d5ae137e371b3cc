"""``archc calibrate``: measure this machine with short microbenchmarks and write a machine profile.

For each kind of kernel a network is made of (convolutions 1x1, 3x3, 5x5, 7x7/2 and depthwise,
fully connected layers, and the element-wise ops: ReLU, BatchNorm, pooling, LRN, concatenation,
addition), a grid of representative shapes is timed at batch 1 and 8, in both memory layouts (NCHW,
what the ordinary module runs; channels-last with fused ReLU, what ``--optimize`` runs), each called
the way generated modules call it (a module call, a functional call, or the ``conv_act`` helper
itself). Each kind also gets its fixed cost: the time of the statement at a minimal shape, which is
what a small layer costs whatever its work. :mod:`archcompiler.passes.latency` predicts from the
profile without torch; :mod:`archcompiler.passes.machine` defines its format and kernel classes.

Each shape is timed twice: back to back with its data in the cache (warm), and with the cores'
caches flushed before each run (cold, see :class:`ColdCache`), as in a network whose weights and
activations do not fit in the cache; prediction mixes the two by how much of the network fits (see
:mod:`archcompiler.passes.latency`). Kernels over a millisecond are timed warm only and get their
kind's fixed cold penalty (see :func:`_warm_cold`). Each time is the median of a few runs, relative to a reference kernel timed just before it,
scaled to the machine's typical speed (see :class:`Reference`): the statistic ``archc profile``
measures, so the two compare like with like.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..backends.torch.runtime import conv_act
from ..passes.machine import VERSION, is_compute

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
COLD_S = 0.001          # kernels longer than this are timed warm only (see _warm_cold)
FIXED = (8, 2)          # channels and map size of the minimal shape that gives each kind's fixed cost


def _timer(fn: Callable[[], Any], repeats: int = 5, budget: float = 0.1,
           before: Callable[[], Any] | None = None) -> float:
    """The median of up to ``repeats`` runs after a warm-up run (at least 2; fewer than ``repeats``
    once ``budget`` seconds are spent): the statistic ``archc profile`` reports. A kernel that takes
    longer than the budget counts its warm-up run as one of three (the median drops a slow first
    run): large kernels are most of the calibration's time. ``before`` runs, untimed, before each
    run (see :class:`ColdCache`)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times: list[float] = [first] if first > budget and repeats > 2 else []
    while len(times) < repeats and (len(times) < 2 or sum(times) < budget):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cache_bytes(device: torch.device) -> int:
    """The cache closest to the cores that run the kernels, in bytes: the private (level 2) caches
    of torch's threads on a CPU, the L2 cache of a GPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size)
    per_core = 0
    try:
        per_core = os.sysconf("SC_LEVEL2_CACHE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    if per_core <= 0:
        try:
            with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
                text = f.read().strip().upper()
            per_core = int(text.rstrip("KM")) * (2**20 if text.endswith("M") else 2**10 if text.endswith("K") else 1)
        except (OSError, ValueError):
            per_core = 2**20
    return per_core * torch.get_num_threads()


class ColdCache:
    """Reads a buffer four times the size of the cores' caches (at least 16 MiB, at most 128 MiB, so
    that a many-core machine still calibrates in about a minute): called before each timed run, so
    that a kernel starts the way it does inside a network that does not fit in the cache, with its
    weights and most of its inputs evicted by the rest of the network. Timed back to back in a loop,
    a kernel keeps them in the cache and runs up to twice as fast as it does in such a network: on
    the 2-core VM of benchmarks/RESULTS.md a 192->16 1x1 convolution on 28x28 took 0.09 ms in a
    loop, 0.16 ms inside GoogLeNet and 0.18 ms after this; a concatenation 0.04, 0.15 and 0.09 ms.
    Reading, not writing: a written buffer leaves the cache full of modified lines whose write-back
    slowed the reference kernel timed next by 1.4x, and with it the whole profile."""

    def __init__(self, device: torch.device, sync: Callable[[], None]):
        self.buffer = torch.ones(min(max(16 * 2**20, 4 * cache_bytes(device)), 128 * 2**20) // 4, device=device)
        self.sync = sync

    def __call__(self) -> None:
        self.buffer.sum()
        self.sync()


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


def _measure_kernels(dev: torch.device, timed: Callable[[Callable[[], Any]], float | None], quick: bool,
                     say: Callable[[str], None]) -> tuple[dict[str, list[list]], dict[str, float | None]]:
    """One pass over the grid: {kind/layout: [[batch, in, out, size, work, time], ...]} and each
    kind's fixed cost, times as ``timed`` gives them."""
    kernels: dict[str, list[list[float]]] = {}      # key -> [[batch, in, out, size, work, seconds], ...]
    fixed: dict[str, float] = {}                     # key -> seconds of the statement at a minimal shape
    for layout in ("nchw", "nhwc"):
        fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
        for kind, (k, stride, pad) in CONVS.items():
            say(f"{kind} ({layout})")
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
                    seconds = timed(run)
                    if size == FIXED[1] and cin == FIXED[0]:
                        fixed[f"{kind}/{layout}"] = seconds
                        break
                    points.append([batch, cin, cout, size, macs, seconds])
            kernels[f"{kind}/{layout}"] = points
    say("linear")
    points = []
    for fin, fout in [(FIXED[0], FIXED[0])] + (LINEARS[:2] if quick else LINEARS):
        lin = torch.nn.Linear(fin, fout).to(dev)
        for batch in (1, 8, 32):
            x = torch.randn(batch, fin, device=dev)
            seconds = timed(lambda lin=lin, x=x: lin(x))
            if fin == FIXED[0]:
                fixed["linear"] = seconds
                break
            points.append([batch, fin, fout, 1, batch * fin * fout, seconds])
    kernels["linear"] = points
    for name, grid in (("matmul", MATMULS), ("attention", ATTENTIONS)):
        say(name)
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
                seconds = timed(run)
                if d == FIXED[0]:
                    fixed[name] = seconds
                    break
                points.append([batch, d, other, tokens, batch * macs, seconds])
        kernels[name] = points
    elementwise = {
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
    for layout in ("nchw", "nhwc"):
        fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
        for name, (fn, work) in elementwise.items():
            say(f"{name} ({layout})")
            points = []
            for c, s in [FIXED] + (QUICK_SIZES if quick else SIZES):
                bn = torch.nn.BatchNorm2d(c).to(dev).eval() if name == "batch_norm" else None
                for batch in (1, 8):
                    if name in ("concat", "add"):     # distinct inputs, as in a network: 4 branches, 2 addends
                        x = [torch.randn(batch, c // 4 if name == "concat" else c, s, s, device=dev).to(
                            memory_format=fmt) for _ in range(4 if name == "concat" else 2)]
                    else:
                        x = torch.randn(batch, c, s, s, device=dev).to(memory_format=fmt)

                    def op(fn=fn, x=x, bn=bn):
                        return bn(x) if bn is not None else fn(x)
                    seconds = timed(op)
                    if (c, s) == FIXED:
                        fixed[f"{name}/{layout}"] = seconds
                        break
                    points.append([batch, c, c, s, batch * work(c, s), seconds])
            kernels[f"{name}/{layout}"] = points
    return kernels, fixed


def _warm_cold(warm: float, cold: float | None, fixed_penalty: float = 0.0) -> tuple[float, float]:
    """A kernel's warm and cold times as recorded. Flushing the caches cannot make a kernel faster,
    so a cold time under the warm one is the machine's noise and both become their mean. A kernel
    longer than COLD_S is not timed cold (``cold`` is None): the cores' caches refill in a small
    part of its time (4 MiB at tens of GB/s: under 0.1 ms), so on a busy machine its two times would
    differ by noise alone (up to 25% on the VM of benchmarks/RESULTS.md); it pays its kind's fixed
    cold penalty (``fixed_penalty``: the minimal shape's cold time minus its warm time)."""
    if cold is None:
        return warm, warm + max(fixed_penalty, 0.0)
    return (warm, cold) if cold > warm else ((warm + cold) / 2,) * 2


class Reference:
    """A fixed, short kernel (a 3x3 convolution, 64 channels, 28x28, one image) timed beside every
    measurement: its time right now says how fast the machine runs at this moment. On a shared
    or virtual machine that speed moves (on the 2-core VM of benchmarks/RESULTS.md by up to 1.8x
    within a minute), so calibrate keeps each kernel's time relative to the reference measured just
    before it and scales all of them by the reference's median over the whole calibration: every
    kernel at the machine's typical speed, whichever moment it was measured at. ``archc profile``
    times the reference too and reports the speed it measured at."""

    def __init__(self, device: torch.device, sync: Callable[[], None]):
        self.conv = torch.nn.Conv2d(64, 64, 3, 1, 1).to(device)
        self.x = torch.randn(1, 64, 28, 28, device=device)
        self.sync = sync
        self.samples: list[float] = []

    def __call__(self, runs: int = 3) -> float:
        def run() -> None:
            self.conv(self.x)
            self.sync()
        with torch.no_grad():
            seconds = _timer(run, repeats=runs, budget=math.inf)
        self.samples.append(seconds)
        return seconds

    @property
    def typical(self) -> float:
        return statistics.median(self.samples)


def calibrate(device: str = "cpu", progress: Callable[[str], None] | None = None, quick: bool = False) -> dict[str, Any]:
    """Measure this machine; returns the machine profile (a JSON-able dict). ``quick`` measures
    two shapes of each kind (a few seconds; a rough profile)."""
    say = progress or (lambda text: None)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    reference = Reference(dev, sync)
    flush = ColdCache(dev, sync)

    def relative(fn: Callable[[], Any], before: Callable[[], None] | None = None) -> float:
        """``fn``'s time in units of the reference kernel's time just before it."""
        def run() -> None:
            fn()
            sync()
        now = reference()
        return _timer(run, before=before) / now

    warm: list[float] = []

    def warm_pass(fn: Callable[[], Any]) -> float:
        warm.append(relative(fn))
        return warm[-1]

    def cold_pass() -> Callable[[Callable[[], Any]], float | None]:
        """The grid again, each run after the caches are flushed (None: a long kernel, not timed cold)."""
        previous = iter(list(warm))

        def timed(fn: Callable[[], Any]) -> float | None:
            earlier = next(previous)
            return None if earlier * reference.typical > COLD_S else relative(fn, before=flush)
        return timed

    started = time.perf_counter()
    with torch.no_grad():
        hot, fixed_hot = _measure_kernels(dev, warm_pass, quick, lambda text: say(f"warm: {text}"))
        cold, fixed_cold = _measure_kernels(dev, cold_pass(), quick, lambda text: say(f"cold caches: {text}"))
        scale = reference.typical               # seconds per reference unit at the machine's typical speed

        def scaled(t: float | None) -> float | None:
            return None if t is None else scale * t
        fixed = {key: [scale * t for t in _warm_cold(seconds, fixed_cold[key])] for key, seconds in fixed_hot.items()}
        kernels = {key: [p[:5] + list(_warm_cold(scale * p[5], scaled(cold[key][j][5]), fixed[key][1] - fixed[key][0]))
                         for j, p in enumerate(points)] for key, points in hot.items()}
        say("memory bandwidth, statement overhead")
        big = torch.randn((4 if quick else 32) * 2**20, device=dev)
        read_s = scale * relative(lambda: big.sum())
        small = torch.randn(1, 64, 1, 1, device=dev)
        views = [lambda: torch.flatten(small, 1), lambda: F.dropout(small, 0.4, False), lambda: small[:, 8:16]]
        call_s = sum(_timer(v, repeats=50) for v in views) / len(views)
    return {
        "archc_machine_profile": VERSION,
        "device": device,
        "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - started, 1),
        "bandwidth_bytes_per_s": big.numel() * 4 / read_s,
        "call_overhead_s": call_s,
        "reference_s": scale,
        "speed_range": [_ratio(min(reference.samples) / scale), _ratio(max(reference.samples) / scale)],
        "speed_percentiles": _percentiles(reference.samples, scale),
        "cache_bytes": cache_bytes(dev),
        "fixed_s": {key: warm for key, (warm, _) in fixed.items()},
        "fixed_cold_s": {key: cold for key, (_, cold) in fixed.items()},
        "kernels": kernels,
    }


def _percentiles(samples: list[float], scale: float) -> list[float]:
    """The 10th and 90th percentiles of the reference kernel's times, relative to ``scale`` (its
    median): how far the machine's speed moved while it was measured."""
    if len(samples) < 2:
        return [1.0, 1.0]
    deciles = statistics.quantiles(samples, n=10)
    return [_ratio(deciles[0] / scale), _ratio(deciles[-1] / scale)]


def _ratio(x: float) -> float:
    """A ratio to three significant digits: rounding to two decimals made a 10th percentile of 0.004
    (a machine whose median was 250x its fastest run) zero, which later divided."""
    return float(f"{x:.3g}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main_progress(text: str) -> None:
    print(f"  measuring {text}...", file=sys.stderr, flush=True)


def summarize(profile: dict[str, Any]) -> str:
    lines = [f"{profile['name']}, {profile['threads']} threads, torch {profile['torch']} "
             f"(measured in {profile['seconds']} s)",
             f"  memory bandwidth (read) {profile['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; per-statement overhead "
             f"{1e6 * profile['call_overhead_s']:.1f} us; fixed cost of a convolution "
             f"{1e6 * profile['fixed_s'].get('conv3x3/nchw', 0):.0f} us "
             f"({1e6 * profile['fixed_cold_s'].get('conv3x3/nchw', 0):.0f} us with the caches flushed); "
             f"{profile['cache_bytes'] / 2**20:.0f} MiB of cache next to the cores",
             f"  the reference kernel took {profile['speed_percentiles'][0]:.2f}x-{profile['speed_percentiles'][1]:.2f}x "
             f"of its median time while measuring (10th to 90th percentile; the profile holds every kernel at the "
             f"median speed)"]
    for kind, points in sorted(profile["kernels"].items()):
        if is_compute(kind):
            best = max(2 * p[4] / p[5] for p in points)
            lines.append(f"  {kind:<20} up to {best / 1e9:7.1f} GFLOP/s ({len(points)} shapes)")
    return "\n".join(lines)


__all__ = ["calibrate", "summarize", "main_progress", "Reference"]
