"""Passes over the IR: each a small function of the graph, in its own module."""

from .analyze import CONVENTION, analyze, annotated_graph, rows, shaped_graph, totals
from .claims import check_claims
from .cost import annotate_cost
from .depth import network_depth
from .memory import annotate_memory
from .receptive_field import annotate_receptive_field
from .shapes import infer_shapes

__all__ = ["CONVENTION", "analyze", "annotated_graph", "rows", "shaped_graph", "totals", "check_claims", "annotate_cost",
           "network_depth", "annotate_memory", "annotate_receptive_field", "infer_shapes"]
