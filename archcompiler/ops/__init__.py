"""The ops: one module per op, each declaring every fact about it (see ``_base.py``), found through
one registry (``_registry.py``) by the passes, backends and importers, which never name an op.

``KINDS`` maps an IR kind to its :class:`OpDef`; ``LAYERS`` a spec's ``op:`` name to its
:class:`LayerOp` (model and lowering); ``FROM_TORCH`` and ``FROM_ONNX`` what the importers read.
Each is built on first lookup, from archc's own op modules and the packages installed under the
entry-point group ``archcompiler.ops``. An op module (archc's or a plugin's) imports what it needs
from here: the records it declares and the helpers for shapes, latency and mappings.
"""

from typing import Any

from . import _onnx as onnx_fields
from ._base import (
    A_STATEMENT,
    AT_MEMORY_SPEED,
    MEMORY,
    STATEMENT,
    FromOnnx,
    FromTorch,
    Kernel,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Params,
    Shape,
    ShapeError,
    Style,
    TooSmall,
    TorchCode,
    Unmappable,
    Window,
    channels_same,
    elements,
    fmt,
    image,
    need,
    one,
    owns,
    per_map,
    same,
    same_pads,
    sequence,
)
from ._catalog import catalog, markdown, unknown
from ._catalog import problems as plugin_problems
from ._registry import GROUP, KNOWN_PLUGINS, Registry, View, registry

KINDS = View("kinds")
LAYERS = View("layers")
FROM_TORCH = View("from_torch")
FROM_ONNX = View("from_onnx")


def layer_or_general(table: View, entry: Any, key: str, arg: Any) -> tuple[Any, dict | None]:
    """The entry that maps a torch call or an ONNX node (``table``: FROM_TORCH or FROM_ONNX) and the layer's
    fields: ``entry``'s, or where it refuses, those of ``else:KEY`` (the general op: a mean over other dims than H
    and W is a ``reduce``, a MatMul of two layers' outputs a ``matmul``), whose refusal is the one raised where
    both refuse."""
    try:
        return entry, entry.layer(arg)
    except Unmappable:
        general = table.get(f"else:{key}")
        if general is None:
            raise
    return general, general.layer(arg)

__all__ = ["KINDS", "LAYERS", "FROM_TORCH", "FROM_ONNX", "GROUP", "KNOWN_PLUGINS", "Registry", "registry",
           "Op", "OpDef", "LayerOp", "TorchCode", "Style", "FromTorch", "FromOnnx", "Unmappable", "Params",
           "Window", "Kernel", "Latency", "Shape", "ShapeError", "TooSmall", "STATEMENT", "MEMORY", "A_STATEMENT",
           "AT_MEMORY_SPEED", "image", "sequence", "same", "channels_same", "per_map", "elements", "need", "one", "owns", "same_pads", "fmt",
           "onnx_fields", "catalog", "markdown", "unknown", "plugin_problems", "layer_or_general"]
