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
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..backends.torch.runtime import conv_act
from ..errors import ArchcError, error
from ..passes.machine import LAYOUTS, VERSION, is_compute, speed_moved

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
COLD_S = 0.001          # kernels longer than this are timed warm only (see _warm_cold)
FIXED = (8, 2)          # channels and map size of the minimal shape that gives each kind's fixed cost

# What a measurement may not exceed (see Peak). Every figure is generous on purpose: the bound is there to
# catch what load makes of the scaling (hundreds of times the hardware's speed), never a figure the
# hardware can reach.
FMA_UNITS = 2           # vector FMA units per core assumed: two, the most any x86 or Arm core has
CLOCK_MARGIN = 1.5      # a maximum clock the system states (cpufreq, lscpu), times this: room for a boost above it
NOMINAL_CLOCK_MARGIN = 2.0  # the "cpu MHz" of /proc/cpuinfo (what a virtual machine, without cpufreq, offers: its
#                             host's nominal clock), times this: a server core's boost reaches 1.9x its base clock
#                             (2.0 -> 3.8 GHz); a 2.6 GHz VM's core ran a convolution at 196 GFLOP/s on one thread,
#                             3.1 GHz at least, at the most FLOPs per cycle AVX-512 allows
FALLBACK_MHZ = 5000.0   # the clock assumed when none can be read (5 GHz: above every shipping CPU's boost)
GPU_FLOPS_PER_SM_CYCLE = 8192   # a GPU: per multiprocessor and cycle, twice a Blackwell SM's dense TF32 rate
GPU_MHZ = 3000.0                # and at 3 GHz, above any GPU's boost clock (torch does not report it)
BANDWIDTH_MARGIN = 2.0  # the read bandwidth written may be at most this times the fastest read of the same
#                         buffer timed by itself (read_bound): load only slows a run down, so the fastest
#                         of several runs is the nearest to what the memory can do
MAX_TRIES = 3           # a measurement above the peak is taken again, at most this many times in all


class CalibrationRefused(ArchcError):
    """No profile is written: a measurement stayed above what the machine can do, or the machine's
    speed moved too much while it was measured (``archc calibrate`` exits 1 with the message)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__([error(message, hint=hint)])


def simd_lanes(flags: Iterable[str]) -> int:
    """fp32 lanes of the widest vector unit the CPU flags announce (avx512f: 16, avx/avx2/fma: 8,
    sse/neon/asimd: 4). No flags or none known (another architecture, a system that hides them): 16,
    the widest, so that the bound stays an upper bound. (SVE is taken at 512 bits, the widest shipped.)"""
    flags = {f.lower() for f in flags}
    if not flags or flags & {"avx512f", "sve", "sve2"}:
        return 16
    if flags & {"avx", "avx2", "fma"}:
        return 8
    if flags & {"sse", "sse2", "asimd", "neon"}:
        return 4
    return 16


def peak_flops_bound(cores: int, mhz: float | None, flags: Iterable[str], margin: float = CLOCK_MARGIN) -> float:
    """FLOP/s no measurement on this CPU can exceed: cores x clock x FLOPs per cycle per core, each
    generous. FLOPs per cycle: 2 (a fused multiply-add) x fp32 lanes (:func:`simd_lanes`) x
    :data:`FMA_UNITS`; the clock: ``mhz`` (read from the system, see :func:`cpu_facts`) times ``margin``
    (:func:`clock_margin`), or :data:`FALLBACK_MHZ` when none was read. An element-wise kernel's
    operations count against it too (one per element and step: no core does more vector operations
    per cycle than it has vector units x lanes). ``cores``: the logical CPUs the process may run on."""
    clock_hz = 1e6 * (mhz * margin if mhz else FALLBACK_MHZ)
    return max(cores, 1) * clock_hz * 2 * simd_lanes(flags) * FMA_UNITS


@dataclass(frozen=True)
class CpuFacts:
    """What :func:`peak_flops_bound` needs: logical CPUs, the maximum clock in MHz (None: unreadable)
    and where it was read, and the CPU flags."""

    cores: int
    mhz: float | None
    flags: frozenset[str]
    clock_source: str = "none"


def parse_cpu_facts(cores: int, max_freq_khz: str | None = None, lscpu: str | None = None,
                    cpuinfo: str | None = None) -> CpuFacts:
    """:class:`CpuFacts` from the texts the system offers, each None when unreadable: the clock from
    ``cpuinfo_max_freq`` (kHz; what cpufreq states as the maximum), else lscpu's "CPU max MHz", else
    the highest "cpu MHz" of ``/proc/cpuinfo`` (a virtual machine, which has no cpufreq, states its
    host's nominal clock there); flags from ``/proc/cpuinfo`` ("flags", or "Features" on Arm)."""
    mhz, source = None, "none"
    try:
        if max_freq_khz and float(max_freq_khz.split()[0]) > 0:
            mhz, source = float(max_freq_khz.split()[0]) / 1e3, "cpuinfo_max_freq"
    except ValueError:
        pass
    if mhz is None and lscpu:
        m = re.search(r"^CPU max MHz:\s*([0-9.]+)", lscpu, re.MULTILINE)
        if m and float(m.group(1)) > 0:
            mhz, source = float(m.group(1)), "lscpu"
    flags: set[str] = set()
    if cpuinfo:
        speeds = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.MULTILINE)]
        if mhz is None and speeds and max(speeds) > 0:
            mhz, source = max(speeds), "cpu MHz"
        m = re.search(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)
        if m:
            flags = set(m.group(1).split())
    return CpuFacts(max(cores, 1), mhz, frozenset(flags), source)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_facts() -> CpuFacts:
    """This machine's :class:`CpuFacts` (see :func:`parse_cpu_facts`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    max_freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    lscpu = None
    if not max_freq:
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5,
                                   env={**os.environ, "LC_ALL": "C"}).stdout
        except (OSError, subprocess.SubprocessError):
            pass
    return parse_cpu_facts(cores, max_freq, lscpu, _read("/proc/cpuinfo"))


def clock_margin(source: str) -> float:
    """What the clock read from ``source`` (:attr:`CpuFacts.clock_source`) is multiplied by in the bound:
    :data:`NOMINAL_CLOCK_MARGIN` for /proc/cpuinfo's "cpu MHz" (a nominal clock), else :data:`CLOCK_MARGIN`."""
    return NOMINAL_CLOCK_MARGIN if source == "cpu MHz" else CLOCK_MARGIN


@dataclass(frozen=True)
class Peak:
    """The bounds every measurement is checked against: ``flops_per_s`` (operations of any kernel:
    FLOPs of a convolution or linear layer, element operations of the others; None: not checked) and
    ``bytes_per_s`` (the read bandwidth; None: measured by :func:`read_bound` when it is needed),
    with ``basis``, how the first was reached, in words."""

    flops_per_s: float | None
    bytes_per_s: float | None = None
    basis: str = ""


def machine_peak(device: torch.device) -> Peak:
    """This machine's :class:`Peak`: on a CPU, :func:`peak_flops_bound` of :func:`cpu_facts`; on a
    GPU, its multiprocessors x :data:`GPU_FLOPS_PER_SM_CYCLE` x :data:`GPU_MHZ`."""
    if device.type == "cuda":
        sms = getattr(torch.cuda.get_device_properties(device), "multi_processor_count", 0)
        if not sms:
            return Peak(None, basis="no bound: the GPU's multiprocessors are unknown")
        return Peak(sms * GPU_FLOPS_PER_SM_CYCLE * GPU_MHZ * 1e6,
                    basis=f"{sms} multiprocessors x {GPU_MHZ / 1e3:.1f} GHz x {GPU_FLOPS_PER_SM_CYCLE} FLOPs per cycle")
    facts = cpu_facts()
    margin = clock_margin(facts.clock_source)
    clock = facts.mhz * margin if facts.mhz else FALLBACK_MHZ
    per_cycle = 2 * simd_lanes(facts.flags) * FMA_UNITS
    where = f"{margin:g}x the {facts.mhz:.0f} MHz of {facts.clock_source}" if facts.mhz else "none readable, assumed"
    return Peak(peak_flops_bound(facts.cores, facts.mhz, facts.flags, margin),
                basis=f"{facts.cores} cores x {clock / 1e3:.1f} GHz ({where}) x {per_cycle} FLOPs per cycle")


def read_bound(read: Callable[[], Any], nbytes: int, sync: Callable[[], None], runs: int = 5) -> float:
    """The read bandwidth no measurement may exceed: :data:`BANDWIDTH_MARGIN` x ``nbytes`` over the
    fastest of ``runs`` runs of ``read`` (after one untimed), each timed by itself (no reference
    kernel: its time is the hardware's, or slower when the machine is busy, never faster)."""
    read()
    sync()
    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        read()
        sync()
        best = min(best, time.perf_counter() - start)
    return BANDWIDTH_MARGIN * nbytes / max(best, 1e-9)


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


Timed = Callable[[Callable[[], Any], float, str], float | None]


def _measure_kernels(dev: torch.device, timed: Timed, quick: bool,
                     say: Callable[[str], None]) -> tuple[dict[str, list[list]], dict[str, float | None]]:
    """One pass over the grid: {kind/layout: [[batch, in, out, size, work, time], ...]} and each
    kind's fixed cost, times as ``timed(fn, operations, label)`` gives them (operations: FLOPs of a
    compute kernel, element operations of the others, what :class:`Peak` bounds; label: the shape,
    in words)."""
    kernels: dict[str, list[list[float]]] = {}      # key -> [[batch, in, out, size, work, seconds], ...]
    fixed: dict[str, float] = {}                     # key -> seconds of the statement at a minimal shape
    for layout in LAYOUTS:
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
                    seconds = timed(run, 2 * macs, f"{kind}/{layout} {cin}->{cout} on {size}x{size}, batch {batch}")
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
            seconds = timed(lambda lin=lin, x=x: lin(x), 2 * batch * fin * fout, f"linear {fin}->{fout}, batch {batch}")
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
                seconds = timed(run, 2 * batch * macs, f"{name} {d}, {other}, {tokens} tokens, batch {batch}")
                if d == FIXED[0]:
                    fixed[name] = seconds
                    break
                points.append([batch, d, other, tokens, batch * macs, seconds])
        kernels[name] = points
    for layout in LAYOUTS:
        fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
        for name, (fn, work) in ELEMENTWISE_OPS.items():
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
                    seconds = timed(op, batch * work(c, s), f"{name}/{layout} {c} channels on {s}x{s}, batch {batch}")
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
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    peak = peak if peak is not None else machine_peak(dev)
    reference = Reference(dev, sync)
    flush = ColdCache(dev, sync)
    retaken = 0

    def relative(fn: Callable[[], Any], amount: float, label: str, before: Callable[[], None] | None = None,
                 limit: float | None = None, unit: str = "FLOP/s") -> float:
        """``fn``'s time in units of the reference kernel's time just before it. ``amount`` (operations,
        or bytes with ``unit`` "B/s") over that time at the machine's typical speed so far, or over the
        time as measured, may not exceed ``limit`` (default: the peak FLOP/s): a time that does is
        measured again, reference included, and after MAX_TRIES tries the calibration is refused."""
        nonlocal retaken
        limit = peak.flops_per_s if limit is None else limit

        def run() -> None:
            fn()
            sync()
        for attempt in range(MAX_TRIES):
            now = reference()
            seconds = _timer(run, before=before)
            ratio = seconds / now
            fastest = min(seconds, ratio * reference.typical)
            rate = amount / fastest if fastest > 0 else math.inf
            if limit is None or rate <= limit:
                return ratio
            if attempt + 1 < MAX_TRIES:
                retaken += 1
        raise _too_fast(label, rate, limit, unit, peak, reference)

    warm: list[float] = []

    def warm_pass(fn: Callable[[], Any], ops: float, label: str) -> float:
        warm.append(relative(fn, ops, label))
        return warm[-1]

    def cold_pass() -> Timed:
        """The grid again, each run after the caches are flushed (None: a long kernel, not timed cold)."""
        previous = iter(list(warm))

        def timed(fn: Callable[[], Any], ops: float, label: str) -> float | None:
            earlier = next(previous)
            return None if earlier * reference.typical > COLD_S else relative(fn, ops, f"{label}, caches flushed",
                                                                                before=flush)
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
        if peak.flops_per_s is not None:        # each was checked at the typical speed of its moment; now at the final one
            for key, points in kernels.items():
                for p in points:
                    rate = (2 if is_compute(key) else 1) * p[4] / min(p[5], p[6])
                    if rate > peak.flops_per_s:
                        raise _too_fast(f"{key} {p[1]:.0f}->{p[2]:.0f} on {p[3]:.0f}x{p[3]:.0f}, batch {p[0]:.0f}, "
                                        "at the typical speed of the whole calibration", rate, peak.flops_per_s,
                                        "FLOP/s", peak, reference, tries=False)
        say("memory bandwidth, statement overhead")
        big = torch.randn((4 if quick else 32) * 2**20, device=dev)
        nbytes = big.numel() * 4
        if peak.bytes_per_s is None:
            peak = replace(peak, bytes_per_s=read_bound(lambda: big.sum(), nbytes, sync))
        read_s = scale * relative(lambda: big.sum(), nbytes, "the memory bandwidth (read)", limit=peak.bytes_per_s,
                                  unit="B/s")
        if nbytes / read_s > peak.bytes_per_s:
            raise _too_fast("the memory bandwidth (read), at the typical speed of the whole calibration",
                            nbytes / read_s, peak.bytes_per_s, "B/s", peak, reference, tries=False)
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
        "bandwidth_bytes_per_s": nbytes / read_s,
        "call_overhead_s": call_s,
        "reference_s": scale,
        "speed_range": [_ratio(min(reference.samples) / scale), _ratio(max(reference.samples) / scale)],
        "speed_percentiles": _percentiles(reference.samples, scale),
        "peak": {"flops_per_s": peak.flops_per_s, "bytes_per_s": peak.bytes_per_s, "basis": peak.basis},
        "retaken": retaken,
        "cache_bytes": cache_bytes(dev),
        "fixed_s": {key: warm for key, (warm, _) in fixed.items()},
        "fixed_cold_s": {key: cold for key, (_, cold) in fixed.items()},
        "kernels": kernels,
    }


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
