"""The graph IR: lowering from a resolved spec, and the op facts (``OPS``: the registry's IR kinds)."""

from ..ops import KINDS as OPS
from ..ops import MEMORY, STATEMENT, OpDef, Params, Shape, ShapeError, Window
from .lower import INPUT, lower, schedule

__all__ = ["INPUT", "lower", "schedule", "OPS", "OpDef", "STATEMENT", "MEMORY", "Params", "Shape", "ShapeError",
           "Window"]
