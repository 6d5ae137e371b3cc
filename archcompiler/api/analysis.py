"""What a spec costs and how it looks: the analysis, the diagram, the report page, measured and predicted
latency, the machine profile."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..options import DrawOptions
from .specs import load_spec

if TYPE_CHECKING:
    from ..spec import Spec


def analyze(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, *, batch: int = 1, depth: int = 1,
            input: tuple[int, int, int] | None = None, optimized: bool = False, train_memory: str | None = None,
            latency: dict[str, Any] | str | Path | bool | None = None) -> dict[str, Any]:
    """Everything ``archc flops`` prints, as a dict, without torch: the rows of the paper's table
    (``rows``: each row's output, params, MACs and FLOPs), the totals, FLOPs by stage and by op, depth,
    peak activation memory and the receptive field; the spec's ``features:``' maps (``features``).

    Args:
        spec_or_path: a spec, its file, or a zoo name; ``overrides``: ``--set`` values.
        batch: the batch the totals and memory are for; ``depth``: 2 for the layers inside each row.
        input: another input size (C, H, W); ``optimized``: the inference graph (BatchNorm folded).
        train_memory: an optimizer (``sgd``, ``adam``, ``adamw``): a training step's memory, by part.
        latency: a machine profile (its dict or file; True: this machine's): predicted time per row.

    Returns:
        the report; see :func:`archcompiler.passes.analyze.analyze` for every key.

    Example::

        archcompiler.analyze("resnet50")["total"]["macs"]         # 4,089,184,256
    """
    from ..passes import analyze as _analyze

    return _analyze(spec_or_path, overrides, batch=batch, depth=depth, input=input, optimized=optimized,
                    train_memory=train_memory, latency=latency)


def draw(spec_or_path: Spec | str | Path, output: str | Path | None = None, options: DrawOptions | None = None, *,
         format: str | None = None, overrides: dict | list | None = None, force: bool = False) -> Any:
    """Render the architecture diagram (``archc draw``).

    Args:
        spec_or_path: a spec, its file, or a zoo name (``resnet50``).
        output: the file to write (its extension gives the format: svg, png, pdf, dot); default
            ``<spec name>.svg`` here; ``"-"`` writes nothing and returns the drawing in ``data``.
        options: what the drawing shows (:class:`DrawOptions`: collapsed rows or a depth, colour by FLOPs or
            params, direction, the inference graph).
        format: the format, when not the output's extension.
        overrides: ``--set`` values (``{"num_classes": 2}`` or ``["num_classes=2"]``).
        force: replace a default-named file archc did not write.

    Returns:
        the drawing: its ``path`` (None with ``"-"``), ``format`` and ``data``.

    Example::

        archcompiler.draw("resnet50", "resnet50.svg", DrawOptions(collapse=True))
    """
    from ..backends.dot import draw as _draw

    return _draw(spec_or_path, output, format=format, view=options or DrawOptions(), overrides=overrides,
                 force=force)


def report(spec_or_path: Spec | str | Path, output: str | Path | None = None,
           overrides: dict | list | None = None, *, batch: int = 1, machine: str | Path | None = None,
           profile: bool | str = False, weights: str | bool | None = None, force: bool = False) -> Path:
    """Write ``archc report``'s page: the diagram (graphviz), the analysis, predicted latency from the
    machine profile and, with ``profile``, latency measured per row (torch; ``True`` on the CPU, or the
    device's name).

    Args:
        output: the page (default ``<spec name>-report.html`` here, replaced only if archc wrote it, or
            with ``force``).
        weights: the name of a builder's published weights (``IMAGENET1K_V1``; ``True``: the builder's
            default, as ``--pretrained``): the page describes the network as they take it (their input size);
            nothing is downloaded.

    Returns:
        the page's path.

    Example::

        archcompiler.report("resnet50", "resnet50.html")
    """
    from ..backends.dot import collapsed_svg
    from ..backends.report import report_html
    from ..errors import error
    from ..io import check_default_output, refuse_inputs, write_text
    from ..pretrained import is_weights_name
    from ..pretrained import resolve as published_weights

    if weights is not None and weights is not True and not is_weights_name(weights):
        raise SpecError([error(f"archc report describes the network, not a file of weights: --weights takes the "
                               f"name of published weights, not {weights}", "--weights",
                               hint="e.g. --weights IMAGENET1K_V1, or --pretrained")])
    published = published_weights(spec_or_path, None if weights is True else weights, weights is True, overrides,
                                  fetch_file=False)
    spec = load_spec(spec_or_path, published.overrides)
    out = Path(output or f"{spec.name}-report.html")
    if isinstance(spec_or_path, (str, Path)):
        refuse_inputs(out, [spec_or_path])
    if output is None:
        check_default_output(out, force)
    device = profile if isinstance(profile, str) else "cpu"
    measured = None
    if profile:
        from ..measure.profile import measure_rows

        measured = measure_rows(spec, batch, device)["rows"]
    return write_text(out, report_html(spec, collapsed_svg(spec), batch=batch, machine=machine, measured=measured,
                                       device=device))


def profile(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, *, batch: int = 1,
            device: str = "cpu", optimize: bool = False, repeats: int = 10,
            machine: str | Path | None = None) -> dict[str, Any]:
    """Predicted and measured milliseconds per row and in total (``archc profile``; imports torch).

    Args:
        spec_or_path, overrides: the spec and ``--set`` values.
        batch, device: what is timed; ``optimize``: the inference module; ``repeats``: runs per row (the median).
        machine: the machine profile the prediction uses (default: the one ``archc calibrate`` saved).

    Returns:
        ``rows`` ({``name``, ``predicted_ms``, ``measured_ms``, ``intensity``, ``bound``}), ``total`` (each column
        summed; ``whole_call_ms``: the forward pass timed as one call), ``machine_speed`` (now against when
        calibrated) and ``machine_unsteady``.

    Example::

        archcompiler.profile("resnet18", batch=8)["total"]
    """
    from ..measure.profile import profile_report

    return profile_report(spec_or_path, batch, device, optimize, repeats, machine, overrides)


def calibrate(device: str = "cpu", output: str | Path | None = None, *, quick: bool = False, force: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Measure this machine's kernels and write its profile (``archc calibrate``), which latency
    prediction reads (imports torch; under a minute, a few seconds with ``quick``).

    Args:
        device: ``cpu`` or ``cuda``; output: the profile's file (default ``~/.cache/archc/machine-DEVICE.json``).
        force: write it even when the machine's speed moved more than the limit while it was measured
            (marked as unsteady); by default that is refused as a busy machine.
        progress: progress on stderr.

    Returns:
        ``profile`` (what was written), ``path``, ``summary`` (the figures in words) and ``warning`` (None, or
        why predictions from it may be off).

    Example::

        archcompiler.calibrate(quick=True)["path"]
    """
    import json

    from ..io import write_text
    from ..measure.calibrate import CalibrationRefused, main_progress, summarize
    from ..measure.calibrate import calibrate as measure
    from ..passes.latency import default_profile_path, unsteady
    from ..passes.machine import MOVED_LIMIT, speed_moved

    profile = measure(device, progress=main_progress if progress else None, quick=quick)
    moved = speed_moved(profile)
    if moved > MOVED_LIMIT:
        lo, hi = profile["speed_percentiles"]
        if not force:
            raise CalibrationRefused(
                f"no profile written: the machine was busy while it was measured: its speed moved {moved:.1f}x (a "
                f"reference kernel took {lo:.2f}x-{hi:.2f}x of its median time, 10th to 90th percentile), more than "
                f"the {MOVED_LIMIT:g}x a profile may move",
                hint="run archc calibrate again when the machine is idle, or with --force to write it anyway, "
                     "marked as unsteady")
        profile["unsteady"] = {"moved": round(moved, 1), "limit": MOVED_LIMIT}
    path = Path(output or default_profile_path(device))
    write_text(path, json.dumps(profile, indent=1))
    return {"profile": profile, "path": path, "summary": summarize(profile), "warning": unsteady(profile)}
