"""The output shape of one spec layer, by the op table's rules: the spec's resolver asks for it when a
block's condition reads its input's shape (``when: "stride != 1 or in_channels != out"``), through
``archcompiler.spec.resolve.layer_shape``, which imports this module on first use."""

from __future__ import annotations

from typing import Any

from .lowerings import LOWERINGS
from .ops import OPS, Shape


def layer_shape(layer: Any, shapes: list[Shape]) -> Shape:
    """The shape ``layer`` (a validated op model) gives for its input ``shapes``; raises
    :class:`~archcompiler.ir.ops.ShapeError` (a ``ValueError``) where the op refuses them."""
    for _, kind, attrs in LOWERINGS[type(layer)](layer):
        if kind == "flatten" and attrs.get("implicit"):
            attrs = {}
        shapes = [tuple(OPS[kind].shape(attrs, shapes))]
    return shapes[0]

