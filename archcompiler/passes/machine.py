"""The machine profile's format, for the two programs that share it: ``archc calibrate``
(:mod:`archcompiler.measure.calibrate`, which measures a machine and writes a profile) and the
latency pass (:mod:`archcompiler.passes.latency`, which predicts from one without torch).

A profile is a JSON object: ``archc_machine_profile`` (:data:`VERSION`), the machine's memory
bandwidth, per-statement overhead, reference kernel time and cache size, and per kernel key
(:func:`kernel_key`: a class of :data:`KERNELS`, with the memory layout for those timed per layout)
its fixed cost warm and cold and its measured shapes; ``speed_percentiles``, how far the machine's
speed moved while it was measured (:func:`speed_moved`), and ``unsteady`` (:class:`Unsteady`) when
``archc calibrate --force`` wrote it although that was more than calibrate accepts. The op table
names, for every op, the class of kernel it runs as (``archcompiler.ir.ops``: ``OpDef.latency``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import Location, SpecError, error

VERSION = 3                 # written by calibrate; the latency pass reads no other version

LAYOUTS = ("nchw", "nhwc")  # the ordinary module's layout, and channels-last (what --optimize runs)
# The kernel classes calibrate measures: the compute kernels (convolutions, fully connected layers)
# and the element-wise ones ("relu" stands for every activation: one pass over the map).
# Over sequences of tokens: "matmul" (a Linear over each token, S x D times D x out) and "attention"
# (nn.MultiheadAttention: projections, QK^T, softmax, AV), looked up by (D, out or heads, S).
CONVOLUTIONS = ("conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise")
COMPUTE = (*CONVOLUTIONS, "linear", "matmul", "attention")
ELEMENTWISE = ("relu", "batch_norm", "max_pool", "max_pool_s2", "avg_pool", "adaptive_pool", "lrn", "concat", "add")
KERNELS = (*COMPUTE, *ELEMENTWISE)
UNLAID = ("linear", "matmul", "attention")   # timed once, without a memory layout: their key has none
# archc calibrate writes no profile (without --force) when the reference kernel's 90th percentile time was more
# than this times its 10th while it measured (speed_moved): the machine was busy, and a profile measured so says
# little about it (a 2-core machine under load moved 361x, and its profile predicted a 0.18 ms layer at 144 ms).
# An idle machine stays within 1.15x (the VM of benchmarks/RESULTS.md), and a one-thread calibration on a 2-core
# machine that other processes kept busy within 1.3x; two threads there (each waits for the other at every kernel,
# and the other is often not running) moved 14x to 186x. 3x leaves a busy machine room, and refuses what makes the
# prediction meaningless.
MOVED_LIMIT = 3.0
# A profile calibrated before a class existed times it like another one, by its work
FALLBACK = {"matmul": "linear", "attention": "linear"}


def kernel_key(kind: str, layout: str) -> str:
    """The profile's key of kernel class ``kind`` in ``layout`` ("nchw" or "nhwc")."""
    return kind if kind in UNLAID else f"{kind}/{layout}"


def is_compute(key: str) -> bool:
    """Whether a profile key is a convolution's or a linear layer's (the roofline's roof)."""
    return key.split("/")[0] in COMPUTE


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Unsteady(BaseModel):
    """The mark of a profile written with ``archc calibrate --force`` although the machine's speed
    moved more than calibrate accepts: ``moved``, :func:`speed_moved`; ``limit``, what it accepts."""

    model_config = ConfigDict(extra="allow")
    moved: Positive
    limit: Positive | None = None


def speed_moved(profile: dict[str, Any]) -> float:
    """How far the machine's speed moved while it was calibrated: the reference kernel's 90th
    percentile time over its 10th (1.0: steady, or a profile from before the percentiles were kept)."""
    lo, hi = profile.get("speed_percentiles") or (1.0, 1.0)
    return hi / max(lo, 1e-3)


class Profile(BaseModel):
    """What prediction reads from a machine profile: a profile is a file anyone can hand archc
    (``--machine FILE``), so it is checked like a spec before any number in it is used."""

    model_config = ConfigDict(extra="allow")
    name: str
    bandwidth_bytes_per_s: Positive
    call_overhead_s: Positive
    reference_s: Positive
    cache_bytes: Positive
    speed_percentiles: Annotated[list[Positive], Field(min_length=2, max_length=2)] | None = None
    unsteady: Unsteady | None = None
    fixed_s: dict[str, Positive]
    fixed_cold_s: dict[str, Positive]
    # [batch, channels in, channels out, map size, work, seconds warm, seconds cold]: all positive
    # (work and time divide)
    kernels: dict[str, list[Annotated[list[Positive], Field(min_length=7, max_length=7)]]]

    @model_validator(mode="after")
    def _has_convolutions(self) -> Profile:
        if not any(points for key, points in self.kernels.items() if is_compute(key)):
            raise ValueError("it holds no timings of convolutions or linear layers")
        return self


def default_profile_path(device: str = "cpu") -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "archc" / f"machine-{device}.json"


def shipped_profile_path(device: str = "cpu") -> Path:
    """The rough profile archc ships for ``device`` (only ``cpu``): what a fresh machine predicts with
    until ``archc calibrate`` has measured it. It carries ``archc_default``, which says where it was measured."""
    return Path(__file__).resolve().parent.parent / "data" / f"machine-default-{device}.json"


def default_note(profile: dict[str, Any]) -> str | None:
    """What to tell a user whose prediction comes from the shipped profile, not from their machine."""
    where = profile.get("archc_default")
    if not where:
        return None
    return (f"no profile of this machine yet: predicted with the rough default profile archc ships ({where}); "
            "archc calibrate measures this machine in under a minute")


def load_profile(path: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """The machine profile at ``path``; by default the one ``archc calibrate`` saved for ``device``, or
    on a machine not yet calibrated the rough profile archc ships (see :func:`default_note`)."""
    where = Path(path) if path is not None else default_profile_path(device)
    if path is None and not where.exists() and shipped_profile_path(device).is_file():
        where = shipped_profile_path(device)
    try:
        data = json.loads(where.read_text())
    except FileNotFoundError:
        raise SpecError([error(f"no machine profile at {where}", "--machine", Location(str(where)),
                               hint="measure this machine first: archc calibrate (under a minute)")]) from None
    except (OSError, ValueError) as exc:
        raise SpecError([error(f"cannot read the machine profile {where}: {exc}", "--machine",
                               Location(str(where)))]) from None
    if not isinstance(data, dict) or "kernels" not in data or not isinstance(data["kernels"], dict):
        raise SpecError([error(f"{where} is not a machine profile written by archc calibrate", "--machine",
                               Location(str(where)))])
    if data.get("archc_machine_profile") != VERSION:
        raise SpecError([error(f"{where} was written by an older archc calibrate (profile version "
                               f"{data.get('archc_machine_profile')!r}, this archc reads version {VERSION})",
                               "--machine", Location(str(where)), hint="measure this machine again: archc calibrate")])
    try:
        Profile.model_validate(data)
    except ValidationError as exc:
        raise SpecError([error(f"{where} is not a valid machine profile: {e['msg']} (got {e['input']!r:.60})",
                               ".".join(str(part) for part in e["loc"]) or "--machine", Location(str(where)),
                               hint="measure this machine again: archc calibrate")
                         for e in exc.errors()[:5]]) from None
    return data


__all__ = ["VERSION", "LAYOUTS", "CONVOLUTIONS", "COMPUTE", "ELEMENTWISE", "KERNELS", "UNLAID", "FALLBACK",
           "kernel_key", "is_compute", "speed_moved", "MOVED_LIMIT",
           "Profile", "Unsteady", "default_profile_path", "shipped_profile_path", "default_note", "load_profile"]
