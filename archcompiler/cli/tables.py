"""Rendering rows as an aligned text table, CSV or Markdown (shared by the commands)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ..api import mib, shape_text  # noqa: F401  (mib: re-exported for the commands)


def human(n: float, base: int = 1000) -> str:
    """1234567 -> '1.23M' (decimal prefixes, as the analysis states)."""
    if n == 0:
        return "0"
    for suffix, power in (("G", 3), ("M", 2), ("K", 1)):
        if abs(n) >= base ** power:
            return f"{n / base ** power:.3g}{suffix}" if abs(n) < 100 * base ** power \
                else f"{n / base ** power:.0f}{suffix}"
    return f"{n:g}"


def size(shape: Sequence[int]) -> str:
    """[C, H, W] -> '28x28x256' (as the paper prints it); [F] -> '1x1xF'."""
    return shape_text(shape)


def render(headers: list[str], rows: list[list[Any]], fmt: str, right: set[int] | None = None) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return buf.getvalue()
    cells = [[str(c) for c in r] for r in rows]
    if fmt == "markdown":
        def esc(s: str) -> str:
            return s.replace("|", "\\|")
        lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
                 "|" + "|".join("---:" if right and i in right else "---" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in cells]
        return "\n".join(lines) + "\n"
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = right or set()

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out) + "\n"
