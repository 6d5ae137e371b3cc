"""Inference optimisation passes: each a pure function from an annotated IR graph to a new one.

``optimize(g)`` runs them in order: :func:`eval_only` (training-only heads and dropout go),
:func:`fold_batch_norm`, :func:`fuse_activation` and :func:`choose_layout`. What each did is
listed in ``graph["optimizations"]``.
"""

from __future__ import annotations

import networkx as nx

from ..cost import annotate_cost
from ..shapes import infer_shapes
from .eval_only import eval_only
from .fold_batch_norm import fold_batch_norm, fold_weights
from .fuse_activation import fuse_activation
from .fuse_siblings import fuse_siblings
from .layout import choose_layout

PASSES = (eval_only, fold_batch_norm, fuse_activation, choose_layout)     # the default pipeline
ALL = {p.__name__: p for p in (eval_only, fold_batch_norm, fuse_activation, fuse_siblings, choose_layout)}


def optimize(g: nx.DiGraph, passes: tuple | list | None = None) -> nx.DiGraph:
    """The optimised inference graph of ``g`` (shapes and cost annotated again); ``passes`` names
    the passes to run, in order (default :data:`PASSES`; ``fuse_siblings`` is available too)."""
    for p in (PASSES if passes is None else [ALL[name] if isinstance(name, str) else name for name in passes]):
        g = p(g)
    infer_shapes(g)
    annotate_cost(g)
    return g


__all__ = ["optimize", "PASSES", "ALL", "fuse_siblings", "eval_only", "fold_batch_norm", "fold_weights", "fuse_activation", "choose_layout"]
