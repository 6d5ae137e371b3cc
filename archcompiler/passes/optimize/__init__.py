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
from .layout import choose_layout

PASSES = (eval_only, fold_batch_norm, fuse_activation, choose_layout)


def optimize(g: nx.DiGraph) -> nx.DiGraph:
    """The optimised inference graph of ``g`` (shapes and cost annotated again)."""
    for p in PASSES:
        g = p(g)
    infer_shapes(g)
    annotate_cost(g)
    return g


__all__ = ["optimize", "PASSES", "eval_only", "fold_batch_norm", "fold_weights", "fuse_activation", "choose_layout"]
