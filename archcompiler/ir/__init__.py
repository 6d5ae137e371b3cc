"""The graph IR: the op table and lowering from a resolved spec."""

from .lower import INPUT, lower, schedule
from .ops import ACTIVATIONS, MEMORY, OPS, STATEMENT, OpDef, Params, Shape, ShapeError, Window, activation_of

__all__ = ["INPUT", "lower", "schedule", "OPS", "ACTIVATIONS", "OpDef", "STATEMENT", "MEMORY", "Params", "Shape",
           "ShapeError", "Window", "activation_of"]
