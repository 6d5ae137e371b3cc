"""``archc sweep --measure``: every variant built and timed in interleaved rounds.

All the variants are built first; then each round runs every variant once, in turn (A B C ... then
A B C ...), after one untimed warm-up round. A machine whose speed changes during the sweep (a
shared or virtual one steps by 1.4-1.5x within minutes) slows every variant of a round alike, so the
median over rounds keeps their ratios and ranks, which are what a choice between variants needs.
Within a round each variant runs once untimed, then once timed: its steady-state time, which a model
that serves requests has. (Timed right after all the others, a variant's first call also pays for
their eviction of its weights and memory blocks: small networks at batch 1 measured 2-4x their
repeated time, which would rank them behind larger ones.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from ..backends.torch.build import build
from ..errors import ArchcError
from ..spec import Spec
from ..util import progress_bar


def time_variants(specs: Sequence[Spec], batch: int = 1, optimize: bool = False, rounds: int = 5,
                  device: str = "cpu", progress: bool = False, warmup: int = 1) -> list[float | str]:
    """Milliseconds per forward pass of each spec (the median over ``rounds`` interleaved rounds), or
    the located error text of a variant that could not be built (its memory refused, say)."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    modules: list[torch.nn.Module | str] = []
    for spec in progress_bar(list(specs), "building", enabled=progress):
        try:
            modules.append(build(spec, seed=0, optimize=optimize).to(dev).eval())
        except ArchcError as exc:
            modules.append("; ".join(d.format() for d in exc.errors))
    inputs = [None if isinstance(m, str) else torch.randn(batch, *s.input, device=dev) for m, s in zip(modules, specs)]
    times: list[list[float]] = [[] for _ in modules]
    with torch.no_grad():
        for r in progress_bar(range(warmup + rounds), "rounds", enabled=progress):
            for i, (m, x) in enumerate(zip(modules, inputs)):
                if isinstance(m, str):
                    continue
                m(x)                            # untimed: the variant back in its steady state
                sync()
                start = time.perf_counter()
                m(x)
                sync()
                if r >= warmup:
                    times[i].append(time.perf_counter() - start)
    return [m if isinstance(m, str) else 1e3 * statistics.median(t) for m, t in zip(modules, times)]


__all__ = ["time_variants"]
