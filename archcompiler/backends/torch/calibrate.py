"""``archc calibrate``: measure this machine with short microbenchmarks and write a machine profile.

For each kind of kernel a network is made of (convolutions 1x1, 3x3, 5x5, 7x7/2 and depthwise,
fully connected layers, and the element-wise ops: ReLU, BatchNorm, pooling, LRN, concatenation,
addition), a few representative shapes are timed at batch 1 and 8, in both memory layouts (NCHW,
what the ordinary module runs; channels-last with fused ReLU, what ``--optimize`` runs), and a
straight line is fitted: time = work x seconds_per_unit + overhead, where work is what archc's op
table counts (multiply-adds for convolutions and linear layers, element operations otherwise). The
profile also holds the memory bandwidth (a large copy), the per-call overhead and the thread count.
:mod:`archcompiler.passes.latency` predicts from it without torch.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

VERSION = 1

# The grid of shapes measured for each kind: channels from 16 to 832 and maps from 7x7 to 56x56
# (224 for the 7x7/2 stem), as in GoogLeNet, ResNet and VGG; batch 1 and 8.
CONVS = {"conv1x1": (1, 1, 0), "conv3x3": (3, 1, 1), "conv5x5": (5, 1, 2), "conv7x7s2": (7, 2, 3),
         "depthwise": (3, 1, 1)}
CHANNELS = [(16, 32), (64, 64), (192, 128), (512, 256), (832, 384)]
SPATIAL = [7, 14, 28, 56]
LARGE_MAPS = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56)]  # VGG
STEM = [(3, 64, 224), (3, 64, 112), (3, 64, 64), (3, 32, 32)]
LINEARS = [(256, 10), (1024, 1000), (2048, 1024), (4096, 4096), (25088, 4096)]
SIZES = [(64, 56), (192, 28), (480, 14), (832, 7), (256, 28), (512, 14), (32, 112)]


def _timer(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]       # the median, as archc profile reports


def calibrate(device: str = "cpu", progress: Callable[[str], None] | None = None, quick: bool = False) -> dict[str, Any]:
    """Measure this machine; returns the machine profile (a JSON-able dict). ``quick`` measures
    one shape of each kind (a few seconds; a rough profile)."""
    say = progress or (lambda text: None)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    def timed(fn: Callable[[], Any]) -> float:
        def run() -> None:
            fn()
            sync()
        return _timer(run)

    kernels: dict[str, list[list[float]]] = {}      # key -> [[features..., work, seconds], ...]
    started = time.perf_counter()
    with torch.no_grad():
        for layout in ("nchw", "nhwc"):
            fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
            for kind, (k, stride, pad) in CONVS.items():
                say(f"{kind} ({layout})")
                shapes = STEM if kind == "conv7x7s2" else [(ci, co if kind != "depthwise" else ci, s)
                                                           for ci, co in CHANNELS for s in SPATIAL]
                if kind == "conv3x3" and not quick:
                    shapes += LARGE_MAPS
                if quick:
                    shapes = shapes[1:2]
                points = []
                for cin, cout, size in shapes:
                    groups = cin if kind == "depthwise" else 1
                    conv = torch.nn.Conv2d(cin, cout, k, stride, pad, groups=groups).to(dev).to(memory_format=fmt)
                    for batch in (1, 8):
                        x = torch.randn(batch, cin, size, size, device=dev).to(memory_format=fmt)
                        out = (size + 2 * pad - k) // stride + 1
                        macs = batch * cout * out * out * (cin // groups) * k * k
                        if layout == "nhwc" and dev.type == "cpu" and groups == 1:
                            def run(x=x, conv=conv, pad=pad, stride=stride):
                                return torch.ops.mkldnn._convolution_pointwise(
                                    x, conv.weight, conv.bias, [pad, pad], [stride, stride], [1, 1], 1, "relu", [], "")
                        else:
                            def run(x=x, conv=conv):
                                return conv(x)
                        points.append([batch, cin, cout, size, macs, timed(run)])
                kernels[f"{kind}/{layout}"] = points
        say("linear")
        points = []
        for fin, fout in LINEARS[:2] if quick else LINEARS:
            lin = torch.nn.Linear(fin, fout).to(dev)
            for batch in (1, 8, 32):
                x = torch.randn(batch, fin, device=dev)
                points.append([batch, fin, fout, 1, batch * fin * fout, timed(lambda lin=lin, x=x: lin(x))])
        kernels["linear"] = points
        elementwise = {
            "relu": (lambda x: F.relu(x, inplace=True), lambda c, s: c * s * s),
            "batch_norm": (None, lambda c, s: c * s * s),
            "max_pool": (lambda x: F.max_pool2d(x, 3, 1, 1), lambda c, s: c * s * s * 9),
            "max_pool_s2": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
                            lambda c, s: c * math.ceil(s / 2) ** 2 * 9),
            "avg_pool": (lambda x: F.avg_pool2d(x, 3, 1, 1), lambda c, s: c * s * s * 9),
            "adaptive_pool": (lambda x: F.adaptive_avg_pool2d(x, 1), lambda c, s: c * s * s),
            "lrn": (lambda x: F.local_response_norm(x, 5), lambda c, s: c * s * s * 5),
            "concat": (lambda x: torch.cat([x, x, x, x], 1), lambda c, s: 4 * c * s * s),
            "add": (lambda x: x + x, lambda c, s: c * s * s),
        }
        for layout in ("nchw", "nhwc"):
            fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
            for name, (fn, work) in elementwise.items():
                say(f"{name} ({layout})")
                points = []
                for c, s in SIZES[:1] if quick else SIZES:
                    for batch in (1, 8):
                        x = torch.randn(batch, c, s, s, device=dev).to(memory_format=fmt)
                        bn = torch.nn.BatchNorm2d(c).to(dev).eval() if name == "batch_norm" else None

                        def op(fn=fn, x=x, bn=bn):
                            return bn(x) if bn is not None else fn(x)
                        points.append([batch, c, c, s, batch * work(c, s), timed(op)])
                kernels[f"{name}/{layout}"] = points
        say("memory bandwidth, call overhead")
        big = torch.randn((4 if quick else 32) * 2**20, device=dev)
        read_s = timed(lambda: big.sum())
        tiny = torch.randn(1, 1, 2, 2, device=dev)
        unit = torch.nn.Conv2d(1, 1, 1).to(dev)

        def chain() -> None:          # what a statement of generated code costs beyond its kernel:
            y = tiny                  # a module call, a functional call, a new tensor
            for _ in range(25):
                y = F.relu(unit(y), inplace=False)
        call_s = _timer(chain, repeats=20) / 50
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
        "kernels": kernels,
    }


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
             f"{1e6 * profile['call_overhead_s']:.1f} us"]
    for kind, points in sorted(profile["kernels"].items()):
        if kind.startswith(("conv", "depthwise", "linear")):
            best = max(2 * p[4] / p[5] for p in points)
            lines.append(f"  {kind:<20} up to {best / 1e9:7.1f} GFLOP/s ({len(points)} shapes)")
    return "\n".join(lines)


__all__ = ["calibrate", "summarize", "main_progress"]
