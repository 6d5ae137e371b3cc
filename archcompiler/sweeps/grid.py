"""``archc sweep``'s static half: a grid of ``--set`` values expanded into variants, each analysed
without torch (params, MACs, peak activation memory, a training step's memory, predicted latency),
then ranked and reduced to its Pareto front.

A grid is ``PATH=V1,V2,...`` per path (values split at commas outside brackets, so
``input=[3,96,96],[3,128,128]`` is two values); every combination is one variant, whose overrides
are the ``PATH=VALUE`` strings ``--set`` takes, so each is read and validated exactly like ``--set``.
A variant that does not validate is a row with its located errors, never a crash. The grid is bounded
(:data:`~archcompiler.spec.limits.MAX_SWEEP_VARIANTS`) before anything is expanded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from ..errors import ArchcError, Location, SpecError, error
from ..spec import Spec, load_spec
from ..spec.limits import MAX_SWEEP_VARIANTS


def split_values(text: str) -> list[str]:
    """``'0.5,1.0'`` -> ``['0.5', '1.0']``; commas inside brackets or braces stay in their value."""
    values, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        elif c == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(grid: Sequence[str] | dict[str, Sequence[Any]]) -> list[tuple[str, list[str]]]:
    """``["width=0.5,1.0", "num_classes=2,10"]`` (or ``{"width": [0.5, 1.0]}``) -> ``[(path, [value
    text, ...]), ...]``. Refuses, located at the ``--grid`` it read, a grid without values, a path given
    twice, and a grid of more than :data:`MAX_SWEEP_VARIANTS` combinations."""
    errors, out = [], []
    items = [(f"{k}=" + ",".join(str(v) for v in vs), k, [str(v) for v in vs]) for k, vs in grid.items()] \
        if isinstance(grid, dict) else [(t, *_split(t)) for t in grid]
    for text, path, values in items:
        loc = Location(f"--grid {text}")
        if not path:
            errors.append(error("a grid is PATH=V1,V2,...", "", loc, hint="e.g. --grid width=0.5,0.75,1.0"))
        elif not values or any(v == "" for v in values):
            errors.append(error("a grid needs one or more values, separated by commas, none empty", path, loc,
                                hint=f"e.g. --grid {path}=1,2"))
        elif any(path == p for p, _ in out):
            errors.append(error(f"'{path}' is in the grid twice", path, loc, hint="give all its values in one --grid"))
        else:
            out.append((path, values))
    if errors:
        raise SpecError(errors)
    if not out:
        raise SpecError([error("a sweep needs at least one --grid PATH=V1,V2,...", "--grid")])
    count = 1
    for path, values in out:
        count *= len(values)
        if count > MAX_SWEEP_VARIANTS:
            sizes = " x ".join(str(len(v)) for _, v in out)
            raise SpecError([error(f"the grid has {sizes} = {math.prod(len(v) for _, v in out):,} combinations, more "
                                   f"than a sweep runs ({MAX_SWEEP_VARIANTS:,})", path,
                                   Location(f"--grid {path}={','.join(values)}"),
                                   hint="fewer values, or several sweeps")])
    return out


def _split(text: str) -> tuple[str, list[str]]:
    if "=" not in text:
        return "", []
    path, _, values = text.partition("=")
    return path.strip(), split_values(values) if values.strip() else []


def variants(grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination of a parsed grid, in order (the last path varies fastest): ``{path: value text}``."""
    paths = [p for p, _ in grid]
    return [dict(zip(paths, combo)) for combo in itertools.product(*(v for _, v in grid))]


def variant_name(sets: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sets.items())


def overrides(sets: dict[str, str], base: Sequence[str] = ()) -> list[str]:
    """The ``--set`` strings of a variant (after the sweep's own ``--set`` values)."""
    return [*base, *(f"{k}={v}" for k, v in sets.items())]


def analyse_variant(spec: Spec, sets: dict[str, str], base: Sequence[str] = (), batch: int = 1,
                    optimize: bool = False, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the sweep's table: ``name``, ``sets``, ``ok``, ``errors`` (located diagnostics, as
    JSON), ``params``, ``macs`` (at ``batch``), ``peak_activation_bytes``, ``train_memory_bytes`` (the
    peak of a training step with the spec's optimizer) and ``predicted_ms`` (None without ``profile``)."""
    from ..passes.analyze import analyze

    row: dict[str, Any] = {"name": variant_name(sets), "sets": dict(sets), "ok": False, "errors": []}
    try:
        variant = load_spec(spec, overrides(sets, base))
        optimizer = variant.train.optimizer if variant.train is not None else "sgd"
        report = analyze(variant, batch=batch, optimized=optimize, train_memory=optimizer, latency=profile)
    except ArchcError as exc:
        row["errors"] = [d.to_json() | {"text": d.format()} for d in exc.errors]
        return row
    row.update(ok=True, params=report["total"]["params"], macs=report["total"]["macs"],
               peak_activation_bytes=report["peak_activation_bytes"],
               train_memory_bytes=report["train_memory"]["peak"],
               predicted_ms=report["latency"]["predicted_ms"] if profile is not None else None)
    return row


def ranks(values: Sequence[float]) -> list[float]:
    """1 for the smallest; ties share the mean of their ranks (as Spearman's correlation ranks)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties as mean ranks)."""
    ra, rb = ranks(a), ranks(b)
    n = len(ra)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va and vb else float("nan")


def pareto_front(points: Sequence[tuple[float, float]], maximize_y: bool = False) -> list[int]:
    """Indices of the points no other point dominates: x is minimised, y minimised (or maximised
    with ``maximize_y``); a point dominates another when it is no worse in both and better in one."""
    sign = -1 if maximize_y else 1
    pts = [(x, sign * y) for x, y in points]
    front = []
    for i, (x, y) in enumerate(pts):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(pts) if j != i):
            front.append(i)
    return front


def axes(rows: list[dict[str, Any]]) -> tuple[str, str, bool]:
    """The plot's axes for a sweep's rows: (x key, y key, maximise y). Accuracy against latency when
    any variant has an accuracy, else latency against MACs; measured latency wherever it was measured."""
    latency = "measured_ms" if any(r.get("measured_ms") is not None for r in rows) else "predicted_ms"
    if any(r.get("accuracy") is not None for r in rows):
        return latency, "accuracy", True
    return "macs", latency, False


def finish(rows: list[dict[str, Any]]) -> None:
    """Ranks (1: fastest) of predicted and measured latency among the variants that have them, and
    ``pareto`` (on the plot's front), in place."""
    for key, rank in (("predicted_ms", "predicted_rank"), ("measured_ms", "measured_rank")):
        have = [r for r in rows if r.get(key) is not None]
        for r, k in zip(have, ranks([r[key] for r in have])):
            r[rank] = k
    x, y, maximize = axes(rows)
    plotted = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    front = set(pareto_front([(r[x], r[y]) for r in plotted], maximize))
    for i, r in enumerate(plotted):
        r["pareto"] = i in front
    for r in rows:
        r.setdefault("pareto", False)


__all__ = ["split_values", "parse_grid", "variants", "variant_name", "overrides", "analyse_variant", "ranks",
           "spearman", "pareto_front", "axes", "finish"]
