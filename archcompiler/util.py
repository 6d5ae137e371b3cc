"""Small helpers with no better home."""

from __future__ import annotations

import functools
import gc
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def mib(n_bytes: float) -> str:
    """Bytes in binary units, labelled as such: 6.12 MiB (1 MiB = 1024 x 1024 bytes)."""
    for suffix, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n_bytes >= 1024 ** power:
            return f"{n_bytes / 1024 ** power:.3g} {suffix}"
    return f"{n_bytes:g} bytes"


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """A per-sample shape as people read it everywhere in archc, the paper's way: H x W x C
    (``(256, 28, 28)`` -> ``28x28x256``; a clip ``(C, T, H, W)`` -> ``TxHxWxC``, ``16x112x112x3``); a flat
    ``(F,)`` -> ``1x1xF``, as Table 1 prints the
    classifier. JSON keeps ``[C, H, W]``; generated code comments keep torch's ``N x C x H x W``."""
    shape = tuple(shape)
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}x{w}x{c}"
    if len(shape) == 1:
        return f"1x1x{shape[0]}"
    if len(shape) == 4:                 # a clip, C x T x H x W: T x H x W x C
        c, t, h, w = shape
        return f"{t}x{h}x{w}x{c}"
    return "x".join(map(str, shape))


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a spec is compiled.

    Compiling builds many small objects that live until the end; the collector would scan them
    again and again, which makes analysis time grow faster than the number of layers.  Reference
    counting still frees everything as usual; the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def without_gc(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with paused_gc():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def progress_bar(items: list, unit: str, enabled: bool = True) -> Iterator:
    """``items`` with a bar on stderr (tqdm) while long work runs on a terminal; the items alone otherwise."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, unit=unit, file=sys.stderr, leave=False)


def progress_seconds(default: float) -> float:
    """Seconds between two plain progress lines (output that is not a terminal): the environment's
    ``ARCHC_PROGRESS_SECONDS`` (a number of seconds, 0: a line at each step), read at each call so that a
    test can lower it for a run it starts, else ``default``."""
    value = os.environ.get("ARCHC_PROGRESS_SECONDS", "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if 0 <= seconds < math.inf:
            return seconds
    return default

