"""Small timing helpers shared by the benchmarks: interleaved repetitions, medians, machine info."""

from __future__ import annotations

import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def interleave(candidates: dict[str, Callable[[], object]], repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Run each candidate once per round, ``repeats`` rounds; seconds per run.

    Each round runs the candidates in a new order (shuffled, seeded), so no candidate always runs right
    after the same neighbour: one that evicts the caches or leaves the allocator in another state
    (a channels-last model before a contiguous one) would otherwise slow the same candidate in every
    round.  (Rotating the order is not enough: it keeps every candidate's neighbours.)  A candidate
    that returns a float has timed itself (seconds): that counts, not its whole call."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates.items())
    shuffle = random.Random(seed).shuffle
    for _ in range(repeats):
        for name, fn in order:
            start = time.perf_counter()
            own = fn()
            times[name].append(own if isinstance(own, float) else time.perf_counter() - start)
        shuffle(order)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired(a: list[float], b: list[float]) -> float:
    """The median of per-round ratios a/b: each pair ran within the same round, so a step in the
    machine's speed between rounds (this VM's moves 1.4x within minutes) cancels out of every ratio."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def process(*args: str) -> Callable[[], None]:
    """A callable that runs ``python args...`` as a whole new process and checks it succeeded."""
    def run() -> None:
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
    return run
