"""``archc calibrate``: measure this machine with short microbenchmarks and write a machine profile.

For each kind of kernel a network is made of (convolutions 1x1, 3x3, 5x5, 7x7/2 and depthwise,
fully connected layers, and the element-wise ops: ReLU, BatchNorm, pooling, LRN, concatenation,
addition), a grid of representative shapes is timed at batch 1 and 8, in both memory layouts (NCHW,
what the ordinary module runs; channels-last with fused ReLU, what ``--optimize`` runs), each called
the way generated modules call it (a module call, a functional call, or the ``conv_act`` helper
itself). Each kind also gets its fixed cost: the time of the statement at a minimal shape, which is
what a small layer costs whatever its work. :mod:`archcompiler.passes.latency` predicts from the
profile without torch; :mod:`archcompiler.passes.machine` defines its format and kernel classes. The grid
of shapes is :mod:`archcompiler.measure.grid`'s; the bounds a figure is checked against,
:mod:`archcompiler.measure.peak`'s.

Each shape is timed twice: back to back with its data in the cache (warm), and with the cores'
caches flushed before each run (cold, see :class:`ColdCache`), as in a network whose weights and
activations do not fit in the cache; prediction mixes the two by how much of the network fits (see
:mod:`archcompiler.passes.latency`). Kernels over a millisecond are timed warm only and get their
kind's fixed cold penalty (see :func:`_warm_cold`). Each time is the median of a few runs, relative to a reference kernel timed just before it,
scaled to the machine's typical speed (see :class:`Reference`): the statistic ``archc profile``
measures, so the two compare like with like.

A busy machine can make that scaling lie: a reference run stalled by other load makes the kernel
timed after it look many times faster than it is (on a loaded 2-core machine a 7x7 convolution came
out at 31,373 GFLOP/s). So every measurement is checked against what the hardware can do at most
(:class:`Peak`: :func:`peak_flops_bound` from the CPU's cores, clock and SIMD width, and a read
bandwidth bound, :func:`read_bound`); one above it is taken again, up to :data:`MAX_TRIES` times in
all, and then the calibration is refused (:class:`CalibrationRefused`: no profile is written). A
calibration during which the machine's speed moved more than
:data:`~archcompiler.passes.machine.MOVED_LIMIT` is refused by ``archc calibrate`` too, unless
``--force`` (the profile then carries ``unsteady``).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ArchcError, error
from ..passes.machine import VERSION, is_compute, speed_moved
from .grid import Timed, measure_grid
from .peak import (
    BANDWIDTH_MARGIN,
    CpuFacts,
    Peak,
    cpu_facts,
    machine_peak,
    parse_cpu_facts,
    peak_flops_bound,
    read_bound,
    simd_lanes,
)

COLD_S = 0.001          # kernels longer than this are timed warm only (see _warm_cold)
MAX_TRIES = 3           # a measurement above the peak is taken again, at most this many times in all


class CalibrationRefused(ArchcError):
    """No profile is written: a measurement stayed above what the machine can do, or the machine's
    speed moved too much while it was measured (``archc calibrate`` exits 1 with the message)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__([error(message, hint=hint)])


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


def calibrate(device: str = "cpu", progress: Callable[[str], None] | None = None, quick: bool = False,
              peak: Peak | None = None) -> dict[str, Any]:
    """Measure this machine; returns the machine profile (a JSON-able dict). ``quick`` measures
    two shapes of each kind (a few seconds; a rough profile). ``peak``: the bounds measurements are
    checked against (default :func:`machine_peak`, and :func:`read_bound` for the bandwidth).
    Raises :class:`CalibrationRefused` when a measurement stays above them in :data:`MAX_TRIES` tries.
    (Whether the machine's speed moved more than ``MOVED_LIMIT`` is the caller's to decide, from the
    profile's ``speed_percentiles``.)"""
    say = progress or (lambda text: None)
    dev = torch.device(device)
    session = _Session(dev, peak if peak is not None else machine_peak(dev))
    started = time.perf_counter()
    with torch.no_grad():
        hot, fixed_hot = measure_grid(dev, session.warm_pass, quick, lambda text: say(f"warm: {text}"))
        cold, fixed_cold = measure_grid(dev, session.cold_pass(), quick, lambda text: say(f"cold caches: {text}"))
        scale = session.reference.typical       # seconds per reference unit at the machine's typical speed
        fixed, kernels = _scaled(hot, fixed_hot, cold, fixed_cold, scale)
        session.check_final(kernels)
        say("memory bandwidth, statement overhead")
        nbytes, read_s = session.bandwidth(quick, scale)
        call_s = _call_overhead(dev)
    reference = session.reference
    return {
        "archc_machine_profile": VERSION,
        "device": device,
        "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - started, 1),
        "bandwidth_bytes_per_s": nbytes / read_s,
        "call_overhead_s": call_s,
        "reference_s": scale,
        "speed_range": [_ratio(min(reference.samples) / scale), _ratio(max(reference.samples) / scale)],
        "speed_percentiles": _percentiles(reference.samples, scale),
        "peak": {"flops_per_s": session.peak.flops_per_s, "bytes_per_s": session.peak.bytes_per_s,
                 "basis": session.peak.basis},
        "retaken": session.retaken,
        "cache_bytes": cache_bytes(dev),
        "fixed_s": {key: warm for key, (warm, _) in fixed.items()},
        "fixed_cold_s": {key: cold for key, (_, cold) in fixed.items()},
        "kernels": kernels,
    }


class _Session:
    """One calibration's timing: each kernel relative to the reference kernel timed just before it,
    checked against the peak (retaken, then refused), warm and then with the caches flushed."""

    def __init__(self, dev: torch.device, peak: Peak) -> None:
        self.dev = dev
        self.sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
        self.peak = peak
        self.reference = Reference(dev, self.sync)
        self.flush = ColdCache(dev, self.sync)
        self.retaken = 0
        self.warm: list[float] = []             # the warm pass's times, in order: the cold pass skips long ones

    def relative(self, fn: Callable[[], Any], amount: float, label: str, before: Callable[[], None] | None = None,
                 limit: float | None = None, unit: str = "FLOP/s") -> float:
        """``fn``'s time in units of the reference kernel's time just before it. ``amount`` (operations,
        or bytes with ``unit`` "B/s") over that time at the machine's typical speed so far, or over the
        time as measured, may not exceed ``limit`` (default: the peak FLOP/s): a time that does is
        measured again, reference included, and after MAX_TRIES tries the calibration is refused."""
        limit = self.peak.flops_per_s if limit is None else limit

        def run() -> None:
            fn()
            self.sync()
        for attempt in range(MAX_TRIES):
            now = self.reference()
            seconds = _timer(run, before=before)
            ratio = seconds / now
            fastest = min(seconds, ratio * self.reference.typical)
            rate = amount / fastest if fastest > 0 else math.inf
            if limit is None or rate <= limit:
                return ratio
            if attempt + 1 < MAX_TRIES:
                self.retaken += 1
        raise _too_fast(label, rate, limit, unit, self.peak, self.reference)

    def warm_pass(self, fn: Callable[[], Any], ops: float, label: str) -> float:
        """A kernel timed back to back, its data in the cache."""
        self.warm.append(self.relative(fn, ops, label))
        return self.warm[-1]

    def cold_pass(self) -> Timed:
        """The grid again, each run after the caches are flushed (None: a long kernel, not timed cold)."""
        previous = iter(list(self.warm))

        def timed(fn: Callable[[], Any], ops: float, label: str) -> float | None:
            earlier = next(previous)
            return None if earlier * self.reference.typical > COLD_S else self.relative(
                fn, ops, f"{label}, caches flushed", before=self.flush)
        return timed

    def check_final(self, kernels: dict[str, list[list[float]]]) -> None:
        """Each figure was checked at the typical speed of its moment; check it again at the whole
        calibration's."""
        peak = self.peak
        if peak.flops_per_s is None:
            return
        for key, points in kernels.items():
            for p in points:
                rate = (2 if is_compute(key) else 1) * p[4] / min(p[5], p[6])
                if rate > peak.flops_per_s:
                    raise _too_fast(f"{key} {p[1]:.0f}->{p[2]:.0f} on {p[3]:.0f}x{p[3]:.0f}, batch {p[0]:.0f}, "
                                    "at the typical speed of the whole calibration", rate, peak.flops_per_s,
                                    "FLOP/s", peak, self.reference, tries=False)

    def bandwidth(self, quick: bool, scale: float) -> tuple[int, float]:
        """The bytes of a buffer and the seconds to read it (a sum) at the machine's typical speed,
        checked against the read bound (measured here unless the peak gives it)."""
        big = torch.randn((4 if quick else 32) * 2**20, device=self.dev)
        nbytes = big.numel() * 4
        if self.peak.bytes_per_s is None:
            self.peak = replace(self.peak, bytes_per_s=read_bound(lambda: big.sum(), nbytes, self.sync))
        limit = self.peak.bytes_per_s
        read_s = scale * self.relative(lambda: big.sum(), nbytes, "the memory bandwidth (read)", limit=limit,
                                       unit="B/s")
        if nbytes / read_s > limit:
            raise _too_fast("the memory bandwidth (read), at the typical speed of the whole calibration",
                            nbytes / read_s, limit, "B/s", self.peak, self.reference, tries=False)
        return nbytes, read_s


def _scaled(hot: dict[str, list[list]], fixed_hot: dict[str, float | None], cold: dict[str, list[list]],
            fixed_cold: dict[str, float | None],
            scale: float) -> tuple[dict[str, list[float]], dict[str, list[list[float]]]]:
    """Each kind's fixed cost and each shape as recorded: [batch, in, out, size, work, warm, cold]
    seconds at the machine's typical speed (``scale``: the reference's median)."""
    def scaled(t: float | None) -> float | None:
        return None if t is None else scale * t
    fixed = {key: [scale * t for t in _warm_cold(seconds, fixed_cold[key])] for key, seconds in fixed_hot.items()}
    kernels = {key: [p[:5] + list(_warm_cold(scale * p[5], scaled(cold[key][j][5]), fixed[key][1] - fixed[key][0]))
                     for j, p in enumerate(points)] for key, points in hot.items()}
    return fixed, kernels


def _call_overhead(dev: torch.device) -> float:
    """The seconds of a statement that does next to nothing (a flatten, an eval-mode dropout, a slice)."""
    small = torch.randn(1, 64, 1, 1, device=dev)
    views = [lambda: torch.flatten(small, 1), lambda: F.dropout(small, 0.4, False), lambda: small[:, 8:16]]
    return sum(_timer(v, repeats=50) for v in views) / len(views)


def _rate(value: float, unit: str) -> str:
    return f"{value / 1e9:.1f} G{unit}" if unit != "B/s" else f"{value / 1e9:.1f} GB/s"


def _too_fast(label: str, rate: float, limit: float, unit: str, peak: Peak, reference: Reference,
              tries: bool = True) -> CalibrationRefused:
    """The refusal of a measurement above the peak: which one, how fast, the bound and its basis, and
    how far the machine's speed had moved so far."""
    samples = reference.samples
    moved = speed_moved({"speed_percentiles": _percentiles(samples, statistics.median(samples))})
    basis = peak.basis if unit != "B/s" else f"{BANDWIDTH_MARGIN:g}x the fastest read of the same buffer"
    what = (f"measured above what this machine can do in each of {MAX_TRIES} tries (the last at {_rate(rate, unit)}; "
            f"the bound: {_rate(limit, unit)}, {basis})" if tries else
            f"measured at {_rate(rate, unit)}, above what this machine can do ({_rate(limit, unit)}: {basis})")
    return CalibrationRefused(
        f"no profile written: {label} {what}; the machine was busy (its speed moved {moved:.1f}x while it was "
        "measured, 10th to 90th percentile of a reference kernel)",
        hint="run archc calibrate again when the machine is idle; --force does not write a figure the hardware "
             "cannot reach (and if it is refused on an idle machine, the bound is wrong for it: please report it)")


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
    peak = profile.get("peak") or {}
    if peak.get("flops_per_s"):
        lines.append(f"  every figure checked against this machine's peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
                     f"({peak.get('basis', '')}), read bandwidth {(peak.get('bytes_per_s') or 0) / 1e9:.1f} GB/s "
                     f"({BANDWIDTH_MARGIN:g}x the fastest read); {profile.get('retaken', 0)} measurements taken again "
                     "for exceeding it")
    for kind, points in sorted(profile["kernels"].items()):
        if is_compute(kind) and points:         # (a grid calibrated with no shapes has no figure to show)
            best = max(2 * p[4] / p[5] for p in points)
            lines.append(f"  {kind:<20} up to {best / 1e9:7.1f} GFLOP/s ({len(points)} shapes)")
    return "\n".join(lines)


__all__ = ["calibrate", "summarize", "main_progress", "Reference", "CalibrationRefused", "Peak", "CpuFacts",
           "peak_flops_bound", "simd_lanes", "parse_cpu_facts", "cpu_facts", "machine_peak", "read_bound",
           "MAX_TRIES"]
