"""Helpers of the ``from_onnx`` mappings: reading a node's attributes as a spec's fields, refusing
what archc has no field for (:func:`~archcompiler.ops._base.need`)."""

from __future__ import annotations

import math
from typing import Any

from ..spec.limits import MAX_DIM
from ._base import need


def one(v: Any) -> Any:
    """[3, 3] -> 3; [3, 5] stays a list."""
    v = [int(x) for x in v]
    return v[0] if len(set(v)) == 1 else v


def pads(n: Any) -> Any:
    """A node's symmetric 2-d ``pads`` as a spec's padding."""
    p = [int(x) for x in n.attrs.get("pads", [0, 0, 0, 0])]
    need(len(p) == 4, f"pads {p} (archc reads 2-d maps: 4 pads)")
    need(min(p) >= 0, f"negative pads {p}")
    need(max(p) <= MAX_DIM, f"pads {p} (each at most {MAX_DIM})")
    need(p[:2] == p[2:], f"asymmetric pads {p}")
    need(n.attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"), "auto_pad")
    return one(p[:2])


def pairs(n: Any, **defaults: int) -> None:
    """Strides, dilations and kernel_shape: two numbers each (a 2-d map), each from 1 to MAX_DIM."""
    for key, default in defaults.items():
        v = [int(x) for x in n.attrs.get(key, [default, default])]
        need(len(v) == 2, f"{key} {v} (archc reads 2-d maps: two numbers)")
        need(min(v) >= 1, f"{key} {v} (each must be at least 1)")
        need(max(v) <= MAX_DIM, f"{key} {v} (each at most {MAX_DIM})")


def f32(v: Any, what: str = "a number") -> float:
    """A float attribute (stored in 32 bits) as the decimal it was written as: 1e-05, not 9.9999997e-06;
    refused where it is not a finite number (nan, inf: no spec holds one)."""
    out = float(f"{float(v):.7g}")
    need(math.isfinite(out), f"{what} {out} (archc reads finite numbers)")
    return out


def eps(n: Any) -> float:
    """A normalization's epsilon: a positive number (what the spec's eps holds)."""
    e = f32(n.attrs.get("epsilon", 1e-5), "epsilon")
    need(e > 0, f"epsilon {e} (it must be positive)")
    return e


def no_constants(n: Any, what: str) -> None:
    need(all(c is None for c in n.consts), f"a {what} with a constant")
