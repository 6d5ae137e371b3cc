"""What the hardware can do at most: the bound every measurement ``archc calibrate`` takes is checked
against (see :mod:`archcompiler.measure.calibrate`). A busy machine can make the calibration's scaling
lie (a reference run stalled by other load makes the kernel timed after it look many times faster than
it is), so a figure above :class:`Peak` is taken again, then refused. The FLOP bound is the CPU's cores,
clock and SIMD width (:func:`peak_flops_bound`, from :func:`cpu_facts`), or a GPU's multiprocessors; the
bandwidth bound, the fastest read of a buffer timed by itself (:func:`read_bound`)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

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
