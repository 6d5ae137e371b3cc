"""The output shape of one spec layer, by the op table's rules: the spec's resolver asks for it when a
block's condition reads its input's shape (``when: "stride != 1 or in_channels != out"``). The spec
layer never imports the IR; the IR registers this rule with it when it is imported."""

from __future__ import annotations

from typing import Any

from ..spec.resolve import set_shape_rule
from .lower import LOWERINGS
from .ops import OPS, Shape


def layer_shape(layer: Any, shapes: list[Shape]) -> Shape:
    """The shape ``layer`` (a validated op model) gives for its input ``shapes``; raises
    :class:`~archcompiler.ir.ops.ShapeError` (a ``ValueError``) where the op refuses them."""
    for _, kind, attrs in LOWERINGS[type(layer)](layer):
        if kind == "flatten" and attrs.get("implicit"):
            attrs = {}
        shapes = [tuple(OPS[kind].shape(attrs, shapes))]
    return shapes[0]


set_shape_rule(layer_shape)
