"""``archc profile``: the module's time per spec row, measured, beside the prediction.

The module is generated with a mark after each statement (``self.archc_mark(row)``); a timer
attributes the time since the previous mark to that row (synchronising the GPU first on CUDA).
After warm-up runs, each row's time is the median over the repetitions. Before each run the
calibration's reference kernel is timed too (:class:`~.calibrate.Reference`): the machine's speed
during the measurement, against its speed during ``archc calibrate``, tells a prediction error from a
machine that is busier (or quieter) now than when it was calibrated.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..backends.torch.build import build
from ..spec import Spec
from .calibrate import Reference


class RowTimer:
    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.rows: dict[str, float] = {}
        self.last = 0.0

    def start(self) -> None:
        self.sync()
        self.rows = {}
        self.last = time.perf_counter()

    def __call__(self, row: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.rows[row] = self.rows.get(row, 0.0) + now - self.last
        self.last = now


def measure_rows(spec: Spec, batch: int = 1, device: str = "cpu", optimize: bool = False, repeats: int = 10,
                 warmup: int = 2) -> dict[str, Any]:
    """Measured milliseconds per IR node and per top-level row (medians over ``repeats``), of the
    whole forward pass (median, measured without the marks) and of the reference kernel
    (``reference_ms``, median)."""
    dev = torch.device(device)
    from ..passes import annotated_graph

    marked = build(spec, seed=0, optimize=optimize, profile=True, check_memory=False).to(dev).eval()
    row_of = {n: d["row"] for n, d in annotated_graph(spec).nodes(data=True)}
    plain = build(spec, seed=0, optimize=optimize, check_memory=False).to(dev).eval()
    timer = RowTimer(dev)
    marked.archc_mark = timer
    reference = Reference(dev, timer.sync)
    x = torch.randn(batch, *spec.input, device=dev)
    per_row: dict[str, list[float]] = {}
    totals = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            timer.start()
            marked(x)
            if i >= warmup:
                for row, seconds in timer.rows.items():
                    per_row.setdefault(row, []).append(seconds)
            reference()
            start = time.perf_counter()
            plain(x)
            timer.sync()
            if i >= warmup:
                totals.append(time.perf_counter() - start)
    nodes = {node: 1e3 * statistics.median(v) for node, v in per_row.items()}
    rows: dict[str, float] = {}
    for node, ms in nodes.items():
        row = row_of.get(node, node)
        rows[row] = rows.get(row, 0.0) + ms
    return {"rows": rows, "nodes": nodes, "total_ms": 1e3 * statistics.median(totals),
            "reference_ms": 1e3 * statistics.median(reference.samples[warmup:])}


def profile_report(spec_or_path, batch: int = 1, device: str = "cpu", optimize: bool = False, repeats: int = 10,
                   machine=None, overrides=None) -> dict:
    """Predicted and measured milliseconds per row and in total (``archc profile --format json``).
    Each total is the sum of its column's rows; ``total.whole_call_ms`` is the forward pass timed as one
    call without the marks between rows, which a busy machine (stalls in whole runs that each row's
    median leaves out) or the marks' own cost can set apart from the rows' sum (see :func:`total_note`)."""
    from ..passes import annotated_graph
    from ..passes.latency import load_profile, predict_rows
    from ..passes.machine import MOVED_LIMIT
    from ..spec import load_spec

    spec = load_spec(spec_or_path, overrides)
    profile = load_profile(machine, device)
    g = annotated_graph(spec)
    if optimize:
        from ..passes.optimize import optimize as run_passes

        g = run_passes(g)
    predicted = predict_rows(g, profile, batch)
    measured = measure_rows(spec, batch, device, optimize, repeats)
    rows = [{"name": name, "predicted_ms": p["ms"], "measured_ms": measured["rows"].get(name),
             "intensity": p["intensity"], "bound": p["bound"]} for name, p in predicted.items()]
    # a row measured but not predicted (none known: every node the module marks is a node of the graph) is
    # shown too, so that the measured total is the sum of what is shown
    rows += [{"name": name, "predicted_ms": None, "measured_ms": ms, "intensity": None, "bound": None}
             for name, ms in measured["rows"].items() if name not in predicted]
    return {"spec": spec.name, "batch": batch, "device": device, "optimized": optimize, "machine": profile["name"],
            "rows": rows, "total": {"predicted_ms": sum(r["predicted_ms"] or 0.0 for r in rows),
                                    "measured_ms": sum(r["measured_ms"] or 0.0 for r in rows),
                                    "whole_call_ms": measured["total_ms"], "repeats": repeats},
            "machine_speed": 1e3 * profile["reference_s"] / measured["reference_ms"],
            "machine_unsteady": {"limit": MOVED_LIMIT, **profile["unsteady"]} if profile.get("unsteady") else None}
