"""``archc sweep``: every combination of a grid of ``--set`` values as a variant of a spec, each
analysed, ranked and placed on a Pareto front; optionally each built and timed, or trained briefly.

One home, one job per module: :mod:`.grid` expands the grid and analyses each variant without torch,
:mod:`.timing` builds and times the variants (torch), :mod:`.trials` trains each as a trial of an
Optuna study, :mod:`.page` draws the Pareto plot and writes ``archc report --sweep``'s page; this
module runs them in that order (:func:`run`). Without measuring or training nothing imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import SpecError, error
from ..options import SweepOptions, TrainOptions
from ..spec import Spec, load_spec
from . import grid as static


def run(spec_or_path: Spec | str | Path, grid: list[str] | dict[str, list[Any]], options: SweepOptions,
        overrides: list[str] | None = None, training: TrainOptions | None = None,
        data: str | Path | None = None) -> dict[str, Any]:
    """The sweep (see :func:`archcompiler.api.sweep` for the result's keys); ``training`` (with ``data``)
    trains every valid variant with those options."""
    from ..passes.latency import load_profile
    from ..passes.machine import default_note

    base = list(overrides or [])
    parsed = static.parse_grid(grid)
    if training is not None and (data is None or options.output is None):
        raise SpecError([error("a sweep with training needs the images (--data DIR) and a folder for its study "
                               "(-o DIR)", "--train")])
    spec = load_spec(spec_or_path, base)           # the sweep's own --set values are checked once, up front
    profile = load_profile(options.machine, options.device)
    rows = [static.analyse_variant(spec, sets, (), options.batch, options.optimize, profile)
            for sets in static.variants(parsed)]
    result: dict[str, Any] = {"archc_sweep": 1, "spec": spec.name, "file": str(spec.file) if spec.file else None,
                              "grid": [[p, v] for p, v in parsed], "set": base, "batch": options.batch,
                              "optimize": options.optimize, "machine": profile["name"],
                              "profile_note": default_note(profile), "rows": rows}
    valid = [r for r in rows if r["ok"]]
    if options.measure and valid:
        _measure(spec, valid, options)
        result["rounds"] = options.rounds
    if training is not None and valid:
        from .trials import train_variants

        trained = train_variants(spec, [r for r in rows if r["ok"]], data, Path(options.output), training)
        for r in rows:
            r.update(trained.get(r["name"], {}))
    static.finish(rows)
    x, y, maximize = static.axes(rows)
    result["axes"] = {"x": x, "y": y, "maximize_y": maximize}
    if options.output is not None:
        _write(result, Path(options.output))
    return result


def _measure(spec: Spec, valid: list[dict[str, Any]], options: SweepOptions) -> None:
    """Each valid variant built and timed (``measured_ms``); one that fails to build becomes invalid."""
    from .timing import time_variants

    timed = time_variants([load_spec(spec, static.overrides(r["sets"])) for r in valid], options.batch,
                          options.optimize, options.rounds, options.device, options.progress)
    for r, t in zip(valid, timed):
        if isinstance(t, str):
            r.update(ok=False, errors=[{"text": t, "message": t}])
        else:
            r["measured_ms"] = t


def _write(result: dict[str, Any], out: Path) -> None:
    """``sweep.json`` and ``pareto.png`` in the sweep's folder (atomically)."""
    from ..io import write_text
    from .page import write_pareto

    result["files"] = {"table": str(out / "sweep.json"), "plot": str(out / "pareto.png")}
    write_pareto(result, out / "pareto.png")
    write_text(out / "sweep.json", json.dumps(result, indent=2) + "\n")


def table(result: dict[str, Any], raw: bool = False) -> tuple[list[str], list[list[Any]]]:
    """The sweep's table as ``archc sweep`` prints it: the headers and one row of cells per variant
    (``raw``: the numbers unformatted, as CSV takes them); an ``error`` column when a variant has errors."""
    from .page import cell, columns

    cols = columns(result["rows"])
    errors = any(r["errors"] for r in result["rows"])
    rows = [[*(("" if r.get(k) is None else r[k]) if raw and k not in ("name", "pareto") else cell(r, k)
               for _, k in cols), *([first_error(r, raw)] if errors else [])] for r in result["rows"]]
    return [h for h, _ in cols] + (["error"] if errors else []), rows


def first_error(row: dict, every: bool = False) -> str:
    """A variant's located error (the first, and how many more; ``every``: all of them)."""
    texts = [d["text"] for d in row["errors"]]
    if every or len(texts) < 2:
        return "; ".join(texts)
    return f"{texts[0]} (and {len(texts) - 1} more)"


def report_page(sweep_dir_or_json: str | Path, output: str | Path) -> Path:
    """``archc report --sweep DIR``'s page (see :func:`archcompiler.api.sweep_report`)."""
    from ..io import write_text
    from .page import read_sweep, sweep_html

    result, png = read_sweep(sweep_dir_or_json)
    return write_text(output, sweep_html(result, png))
