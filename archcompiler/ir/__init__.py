"""The graph IR: the op table and lowering from a resolved spec."""

from . import layer_shape as _layer_shape  # noqa: F401  (gives the spec's conditions the shape rules)
from .lower import INPUT, lower, schedule
from .ops import OPS, OpDef, Params, Shape, ShapeError, Window

__all__ = ["INPUT", "lower", "schedule", "OPS", "OpDef", "Params", "Shape", "ShapeError", "Window"]
