"""The importers' common form: the model as a flat list of spec layers in execution order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ops import registry
from .text import model


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
    # module path -> the source's value that holds its output, and whether that value is channels-last
    # (N x H x W x C): where an import's check looks for the first layer whose output differs (ONNX)
    probes: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _common(scopes: list[str]) -> str:
    parts = [s.split(".") if s else [] for s in scopes]
    common = []
    for seg in zip(*parts):
        if len(set(seg)) > 1:
            break
        common.append(seg[0])
    return ".".join(common)


def place(items: list[Item], result: str, heads: dict[str, str], unique: Any) -> tuple[str, dict[str, str]]:
    """Calls made outside any sub-module (a flat forward, as archc's own modules have) get the
    container they belong to, and their names from it: an activation, add or product where its
    first input is; a concatenation where its inputs are; another op (a pool, a dropout) with the
    layers that read the same input, or else between where its input and its reader are."""
    by_name = {it.name: it for it in items}
    readers: dict[str, list[Item]] = {}
    for it in items:
        for s in it.inputs:
            readers.setdefault(s, []).append(it)
    def joins(fields: dict) -> bool:      # an element-wise op (a sum, a product, an activation): where its input is
        facts = registry().facts(fields["op"])
        return facts is not None and (facts.pointwise or facts.join == "sum" or
                                      model(fields).n_inputs == "many" and facts.join is None)

    def scope_of(name: str) -> str:
        it = by_name.get(name)
        return "" if it is None or it.scope is None else it.scope

    def down(it: Item, depth: int = 0) -> str | None:
        for r in readers.get(it.name, []):
            if r.path is not None or r.scope is not None:
                return r.scope
            if depth < 8:
                d = down(r, depth + 1)
                if d is not None:
                    return d
        return None

    # an input -> the scopes of its readers that hold parameters, and what they have in common: such a reader
    # has its scope from the start (never placed here), so this is found once per input, not once per reader
    others_of: dict[str, tuple[list[str], str]] = {}
    renamed: dict[str, str] = {}
    for it in items:
        if it.scope is not None:
            continue
        ins = [s for s in it.inputs if s != "input"]
        if joins(it.fields):
            it.scope = scope_of(ins[0]) if ins else ""
        elif getattr(registry().facts(it.fields["op"]), "join", None) == "stack":
            it.scope = _common([scope_of(s) for s in ins])
        else:
            if it.inputs[0] not in others_of:
                found = [r.scope for r in readers.get(it.inputs[0], []) if r.path is not None]
                others_of[it.inputs[0]] = found, _common(found)
            others, common = others_of[it.inputs[0]]
            below = down(it)
            if others and (below is None or below.startswith(common)):
                it.scope = common
            elif others:
                it.scope = below            # a head's first op (GoogLeNet's aux pooling) goes with the head
            else:
                it.scope = _common([scope_of(ins[0]) if ins else "", below if below is not None else ""])
        old = it.name
        it.name = unique(f"{it.scope}.{it.fields['op']}" if it.scope else it.fields["op"])
        renamed[old] = it.name
        by_name[it.name] = it
    for it in items:
        it.inputs = [renamed.get(s, s) for s in it.inputs]
    return renamed.get(result, result), {k: renamed.get(v, v) for k, v in heads.items()}
