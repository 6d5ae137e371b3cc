"""Sweeps: a grid of variants of a spec, analysed, measured or trained, and their page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import SweepOptions, TrainOptions

if TYPE_CHECKING:
    from ..spec import Spec


def sweep(spec_or_path: Spec | str | Path, grid: list[str] | dict[str, list[Any]],
          options: SweepOptions | None = None, *, overrides: list[str] | None = None,
          training: TrainOptions | None = None, data: str | Path | None = None) -> dict[str, Any]:
    """Every combination of ``grid`` as a variant of the spec, analysed and ranked (``archc sweep``).

    Args:
        spec_or_path: a spec, its file, or a zoo name.
        grid: ``["width=0.5,1.0", ...]`` or ``{"width": [0.5, 1.0]}``; each variant is validated like
            ``--set`` (after ``overrides``, the sweep's own ``--set`` values).
        options: :class:`SweepOptions`: the batch, the optimised module, the output folder (``sweep.json``
            and ``pareto.png``), the machine profile, measuring each variant (``measure``, ``rounds``,
            ``device``), progress.
        training: train each valid variant briefly with these options (:class:`TrainOptions`) on ``data``,
            each a trial of an Optuna study in the output folder (``sweep.db``, resumable and shareable by
            several processes; ``trials/`` holds each trial's run folder).

    Returns:
        ``rows`` (one per variant: ``name``, ``sets``, ``ok``, ``errors``, ``params``, ``macs``,
        ``peak_activation_bytes``, ``train_memory_bytes``, ``predicted_ms``, ``predicted_rank``, ``pareto``;
        measured: ``measured_ms`` and ``measured_rank``; trained: ``accuracy``, ``trial``, ``trial_state``)
        and ``axes`` (the plot's). Without measuring or training it never imports torch.

    Example::

        archcompiler.sweep("resnet18", ["width=0.5,1.0"], SweepOptions(output="sweep/"))["rows"]
    """
    from ..sweeps import run

    return run(spec_or_path, grid, options or SweepOptions(), overrides, training, data)


def sweep_table(result: dict[str, Any], raw: bool = False) -> tuple[list[str], list[list[Any]]]:
    """A sweep's table as ``archc sweep`` prints it: the headers and one row of cells per variant
    (``raw``: numbers unformatted, as its CSV has them; an ``error`` column when a variant has errors).

    Example::

        headers, rows = archcompiler.sweep_table(archcompiler.sweep("resnet18", ["width=0.5,1.0"]))
    """
    from ..sweeps import table

    return table(result, raw)


def sweep_report(sweep_dir_or_json: str | Path, output: str | Path | None = None, force: bool = False) -> Path:
    """``archc report --sweep DIR``: a page with a sweep's table and its plot (``sweep.json`` and
    ``pareto.png`` in DIR, or the given ``sweep.json`` and the ``pareto.png`` beside it); default
    ``sweep-report.html`` in the sweep's folder (replaced only if archc wrote it, or with ``force``).

    Example::

        archcompiler.sweep_report("sweep/")
    """
    from ..io import check_default_output
    from ..sweeps import report_page

    source = Path(sweep_dir_or_json)
    out = Path(output or (source if source.is_dir() else source.parent) / "sweep-report.html")
    if output is None:
        check_default_output(out, force)
    return report_page(source, out)
