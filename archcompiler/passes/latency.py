"""Predicted latency from a machine profile (``archc calibrate``), without torch.

Each op's time comes from what the profile measured for its kind of kernel on this machine: the two
measured shapes nearest to the op's (batch, channels in and out, map size; compared on a log scale)
each give the kind's fixed cost (the statement at a minimal shape) plus the rest of their time
scaled by the ratio of work, where work is what the op table counts (multiply-adds for convolutions
and linear layers, element operations otherwise). The profile holds each shape timed with its data
in the cache and after the cache was flushed; a network whose working set (weights and activations
at this batch) is much larger than the cores' caches runs its kernels cold, one that fits runs them
warm, and in between the two times are mixed by the share of the working set that does not fit
(:func:`coldness`). Which kernel an op runs as, and its work, the op table says (``OpDef.latency``);
views (flatten, dropout in eval mode, channel slices) cost one statement. The profile's format is
:mod:`archcompiler.passes.machine`'s. The layout is the module's: NCHW for the ordinary
module, channels-last (with fused ReLU) after ``--optimize``. Each op is also placed on the roofline: its arithmetic intensity (FLOPs per byte
moved) against the machine's ridge point (peak FLOP/s over bandwidth) says whether it is compute- or
memory-bound.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import networkx as nx

from ..ir import MEMORY, OPS, STATEMENT
from ..ir.plan import plan
from .machine import FALLBACK, MOVED_LIMIT, default_profile_path, is_compute, kernel_key, load_profile, speed_moved

UNSTEADY = 1.5              # the reference kernel's 90th over 10th percentile beyond which a profile is suspect


def _logs(features: list[float]) -> tuple[float, ...]:
    """The shape (batch, channels in and out, map size) on the log scale on which shapes are compared."""
    return tuple(math.log(max(a, 1)) for a in features[:4])


def _nearest(logs: list[tuple[float, ...]], features: list[float]) -> list[tuple[float, int]]:
    """(squared distance, index) of the two points nearest ``features``, on the log scale of
    ``_logs`` (``logs``: each point's ``_logs``)."""
    t0, t1, t2, t3 = _logs(features)
    return heapq.nsmallest(2, (((q[0] - t0) ** 2 + (q[1] - t1) ** 2 + (q[2] - t2) ** 2 + (q[3] - t3) ** 2, i)
                               for i, q in enumerate(logs)))


def _lookup(points: list[list[float]], features: list[float], work: float, fixed: float, column: int = 5,
            nearest: list[tuple[float, int]] | None = None) -> float:
    """Seconds for ``work`` from the measured shapes nearest to ``features`` (distance in log
    space): the kind's fixed cost plus the rest of each neighbour's time (``column``: 5 warm, 6
    cold) scaled by the ratio of work (nearby kernels run at nearby speeds; the fixed cost does not
    shrink with the work). ``nearest``: :func:`_nearest`'s answer, when the caller has it already."""
    if nearest is None:
        nearest = _nearest([_logs(p) for p in points], features)
    weights = [1 / (d + 1e-3) for d, _ in nearest]
    estimates = [fixed + max(points[i][column] - fixed, 0.0) * work / points[i][4] for _, i in nearest]
    return sum(w * e for w, e in zip(weights, estimates)) / sum(weights)


def working_set(g: nx.DiGraph, batch: int = 1) -> int:
    """Bytes one inference forward pass touches: its weights and every activation at ``batch``."""
    return 4 * sum(d["params"].total + batch * math.prod(d["shape"])
                   for _, d in g.nodes(data=True) if not d["training_only"])


def coldness(g: nx.DiGraph, profile: dict[str, Any], batch: int = 1, working: int | None = None) -> float:
    """The share of the working set that does not fit in the cores' caches (0: the whole network
    stays in the cache and its kernels run warm; near 1: every kernel finds its weights evicted).
    ``working``: :func:`working_set`, when the caller has it already."""
    working = working_set(g, batch) if working is None else working
    return max(0.0, 1.0 - profile["cache_bytes"] / max(working, 1))


def cache_use(g: nx.DiGraph, profile: dict[str, Any], batch: int = 1) -> dict[str, Any]:
    """``working_set_bytes``, ``cache_bytes`` (the profile's) and ``cold`` (:func:`coldness`),
    what ``flops --latency`` and the report show beside the prediction."""
    working = working_set(g, batch)
    return {"working_set_bytes": working, "cache_bytes": profile["cache_bytes"],
            "cold": round(coldness(g, profile, batch, working), 3)}


def peak_flops(profile: dict[str, Any]) -> float:
    """The fastest FLOP/s the profile measured for a convolution or linear layer: the roofline's roof."""
    return max(2 * p[4] / p[5] for k, v in profile["kernels"].items() if is_compute(k) for p in v)


def unsteady(profile: dict[str, Any]) -> str | None:
    """A warning when the machine's speed moved while it was calibrated, else None. Calibrate times a
    reference kernel about 1,800 times; on a steady stretch of the VM of benchmarks/RESULTS.md its
    10th and 90th percentiles lay 8-13% apart, on a busy or shared machine they can be 1.8x apart, and a prediction
    from that profile is only as good as the speed the machine happens to run at later. A profile that
    ``archc calibrate --force`` wrote although it moved more than calibrate accepts (``unsteady``) says so."""
    lo, hi = profile.get("speed_percentiles") or (1.0, 1.0)
    forced = profile.get("unsteady")
    moved = speed_moved(profile)
    if not forced and lo > 0 and moved <= UNSTEADY:
        return None
    how = (f"; archc calibrate refuses more than {forced.get('limit') or MOVED_LIMIT:g}x and wrote it only because "
           "of --force" if forced else "")
    return (f"this machine's speed moved {moved:.1f}x while it was calibrated (the reference kernel took "
            f"{lo:.2f}x-{hi:.2f}x of its median time, 10th to 90th percentile{how}): it was busy or is shared, and "
            f"measured times can differ from the prediction by as much; run archc calibrate again when it is idle")


def cache_speed(cold: float) -> str:
    """The speed the kernels were predicted at, in words, for a :func:`coldness`."""
    if cold >= 0.9:
        return "cold-cache speed"
    if cold <= 0.1:
        return "warm-cache speed"
    return f"{100 * cold:.0f}% of the way from warm- to cold-cache speed"


def predict(g: nx.DiGraph, profile: dict[str, Any], batch: int = 1) -> dict[str, dict[str, Any]]:
    """Per node of the inference forward pass: ``seconds``, ``flops``, ``bytes``, ``intensity``
    (FLOPs per byte) and ``bound`` ("compute" or "memory")."""
    layout = "nhwc" if g.graph.get("memory_format") == "channels_last" else "nchw"
    kernels = profile["kernels"]
    bandwidth = profile["bandwidth_bytes_per_s"]
    call = profile["call_overhead_s"]
    fixed, fixed_cold = profile["fixed_s"], profile["fixed_cold_s"]
    cold = coldness(g, profile, batch)
    ridge = peak_flops(profile) / bandwidth
    run = plan(g, heads=False)
    logs: dict[str, list[tuple[float, ...]]] = {}      # kernel key -> _logs of its points, computed once
    near: dict[tuple, list[tuple[float, int]]] = {}     # (kernel key, *features) -> _nearest
    out: dict[str, dict[str, Any]] = {}
    for n in run.order:
        d = g.nodes[n]
        if d["training_only"]:
            continue
        ins = [g.nodes[p]["shape"] for p in d["inputs"]]
        weight_bytes = 4 * d["params"].total
        moved = 4 * batch * (sum(math.prod(s) for s in ins) + math.prod(d["shape"])) + weight_bytes
        flops = 2 * batch * d["macs"] if d["macs"] else batch * d["elementwise"]
        op = OPS[d["op"]]
        kernel = None if op.passthrough(d["attrs"], ins) else op.latency.kernel(d["attrs"], ins, d["shape"])
        if kernel is None:               # the value passes through: no statement at all
            seconds = 0.0
        elif kernel.kind == STATEMENT:   # a view
            seconds = call
        else:
            key = kernel_key(kernel.kind, layout) if kernel.kind != MEMORY else None
            features, work = [batch, *kernel.features], batch * kernel.work
            if key and key not in kernels and kernel.kind in FALLBACK:   # a profile from before the class
                key = kernel_key(FALLBACK[kernel.kind], layout)
            points = kernels.get(key) if key else None
            if not points or not work:      # a kind the profile lacks: at memory speed
                seconds = moved / bandwidth + call
            else:
                if key not in logs:
                    logs[key] = [_logs(p) for p in points]
                shape = (key, *features)        # inception modules repeat shapes: look each up once
                if shape not in near:
                    near[shape] = _nearest(logs[key], features)
                warm = _lookup(points, features, work, fixed.get(key, call), 5, near[shape])
                seconds = warm + cold * (_lookup(points, features, work, fixed_cold.get(key, call), 6, near[shape]) - warm)
        intensity = flops / moved if moved else 0.0
        out[n] = {"seconds": seconds, "flops": flops, "bytes": moved, "intensity": intensity,
                  "bound": "compute" if intensity >= ridge else "memory"}
    return out


def predict_rows(g: nx.DiGraph, profile: dict[str, Any], batch: int = 1, depth: int = 1) -> dict[str, dict[str, Any]]:
    """Per spec row (``depth`` as in ``rows``): predicted ``ms``, FLOPs, bytes, intensity and its
    bound: where its intensity lies against the roofline's ridge, as a roofline chart draws it."""
    nodes = predict(g, profile, batch)
    rows: dict[str, dict[str, Any]] = {}
    for n, p in nodes.items():
        key = "/".join(g.nodes[n]["layer"].split("/")[:depth])
        r = rows.setdefault(key, {"ms": 0.0, "flops": 0, "bytes": 0})
        r["ms"] += 1e3 * p["seconds"]
        r["flops"] += p["flops"]
        r["bytes"] += p["bytes"]
    ridge = peak_flops(profile) / profile["bandwidth_bytes_per_s"]
    for r in rows.values():
        r["intensity"] = r["flops"] / r["bytes"] if r["bytes"] else 0.0
        r["bound"] = "compute" if r["intensity"] >= ridge else "memory"
    return rows


__all__ = ["predict", "predict_rows", "load_profile", "default_profile_path", "coldness", "working_set", "cache_use",
           "cache_speed", "unsteady", "peak_flops"]
