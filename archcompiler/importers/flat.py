"""The importers' common form: the model as a flat list of spec layers in execution order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    """One spec layer: its name (the module path, dotted), its fields (``op`` first), the layers
    it reads (``"input"`` for the network's input), the op of the op table it lowers to, the
    module path whose parameters it holds (None for a parameterless op), the container it belongs
    to (``""``: the model itself) and its output shape per sample."""

    name: str
    fields: dict[str, Any]
    inputs: list[str]
    kind: str
    path: str | None
    scope: str
    shape: tuple[int, ...] = ()
    in_shape: tuple[int, ...] = ()
    cls: str = ""
    bn: str | None = None       # a conv fused with its BatchNorm: the BatchNorm's module path (a torch.rename rule)


@dataclass
class Flat:
    """A model read by an importer: its name, input shape (C, H, W), layers and where it came from."""

    name: str
    input: tuple[int, ...]
    items: list[Item]
    source: str
    classes: dict[str, str] = field(default_factory=dict)     # container path -> its class name
    result: str = ""                                          # the item the model returns
    heads: dict[str, str] = field(default_factory=dict)       # training-only outputs: name -> item
    rules: list[list[str]] = field(default_factory=list)      # torch.rename rules the blocks need
