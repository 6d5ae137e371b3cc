"""The graph IR: the op table and lowering from a resolved spec."""

from .lower import INPUT, lower, schedule
from .ops import OPS, OpDef, Params, Shape, ShapeError, Window

__all__ = ["INPUT", "lower", "schedule", "OPS", "OpDef", "Params", "Shape", "ShapeError", "Window"]
