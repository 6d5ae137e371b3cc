"""From a flat list of layers to a spec a person reads.

1. ``fuse``: a convolution and the BatchNorm after it (module paths ``P.conv`` and ``P.bn``, as
   torchvision's BasicConv2d names them) become one ``conv`` layer ``P`` with ``norm``; an activation
   that alone reads a conv, linear or add becomes that layer's ``act``.
2. ``blocks`` (see :func:`find_blocks`): sub-modules with the same inner graph become one block
   whose arguments are what differs between them; consecutive uses become a table.
3. the YAML text: the schema line, a comment naming the source, then the spec.
"""

from __future__ import annotations

import re

from ..ops import registry
from .blocks import block_lines
from .flat import Flat, Item
from .text import layer_line, model, scalar


def fuse(flat: Flat) -> Flat:
    """Conv + BatchNorm pairs named ``P.conv`` / ``P.bn`` become one conv ``P``; activations join
    the conv, linear or add they alone read. The model computes the same."""
    items = list(flat.items)
    readers: dict[str, list[Item]] = {}
    for it in items:
        for s in it.inputs:
            readers.setdefault(s, []).append(it)
    by_name = {it.name: it for it in items}
    gone: dict[str, str] = {}     # a removed item -> the item whose value it was

    def only_reader(it: Item) -> Item | None:
        r = readers.get(it.name, [])
        return r[0] if len(r) == 1 and it.name != flat.result and it.name not in flat.heads.values() else None

    for it in items:
        # a layer that takes a norm (a conv's norm: batch_norm), and the per-channel affine map in evaluation (a
        # BatchNorm) that is the only reader of its output: one layer
        if it.name in gone or "norm" not in model(it.fields).model_fields or it.path is None:
            continue
        bn = only_reader(it)
        facts = registry().facts(bn.fields["op"]) if bn is not None else None
        if bn is None or facts is None or not facts.eval_affine or bn.path is None or bn.inputs != [it.name]:
            continue
        parent, _, leaf = it.path.rpartition(".")
        own = leaf == "conv" and bn.path == f"{parent}.bn" and parent and parent not in by_name
        name = parent if own else it.name          # P.conv + P.bn: the layer P; else a torch.rename rule
        norm = {k: v for k, v in bn.fields.items() if k != "op"}
        fields = {k: v for k, v in it.fields.items() if k != "bias"}
        fields["norm"] = "batch_norm" if norm == {"eps": 1e-5, "momentum": 0.1} else {"kind": "batch_norm", **norm}
        if it.fields.get("bias"):
            fields["bias"] = True
        fused = Item(name, fields, it.inputs, it.kind, it.path, name.rpartition(".")[0] if own else it.scope,
                     bn.shape, it.in_shape, flat.classes.get(name, it.cls), None if own else bn.path)
        by_name[name] = fused
        items[items.index(it)] = fused
        gone[bn.name] = name
        if name != it.name:
            gone[it.name] = name
        readers[name] = readers.pop(bn.name, [])
        if flat.result == bn.name:
            flat.result = name
        flat.heads = {h: name if v == bn.name else v for h, v in flat.heads.items()}
    items = [it for it in items if it.name not in gone or gone[it.name] == it.name and it is by_name[it.name]]
    items = _rewire(items, gone)
    readers = {}
    for it in items:
        for s in it.inputs:
            readers.setdefault(s, []).append(it)
    by_name = {it.name: it for it in items}
    gone = {}
    for it in items:
        facts = registry().facts(it.fields["op"])
        if facts is None or not facts.pointwise or len(it.inputs) != 1 or it.inputs[0] == "input":
            continue
        src = by_name[it.inputs[0]]
        if "act" in model(src.fields).model_fields and "act" not in src.fields and only_reader(src) is it:
            src.fields["act"] = it.fields["op"]
            src.shape = it.shape
            gone[it.name] = src.name
            if flat.result == it.name:
                flat.result = src.name
    items = _rewire([it for it in items if it.name not in gone], gone)
    return Flat(flat.name, flat.input, items, flat.source, flat.classes, flat.result, flat.heads)


def _rewire(items: list[Item], gone: dict[str, str]) -> list[Item]:
    def follow(n: str) -> str:
        while n in gone and gone[n] != n:
            n = gone[n]
        return n
    for it in items:
        it.inputs = [follow(s) for s in it.inputs]
    return items


def _unhyphenate(flat: Flat) -> tuple[Flat, list[list[str]]]:
    """Module names with a hyphen (torchvision's RegNet: ``block1-0``) are no spec names: the spec
    says ``block1_0`` and a torch.rename rule gives the module its name back."""
    rules: dict[str, list[str]] = {}

    def fix(name: str | None) -> str | None:
        if name is None or "-" not in name:
            return name
        parts = name.split(".")
        for k, part in enumerate(parts):
            if "-" in part:
                prefix = ".".join(parts[:k + 1])
                plain = prefix.replace("-", "_")
                rules.setdefault(plain, [f"^{re.escape(plain)}([/.])", prefix + r"\1"])
        return name.replace("-", "_")
    for it in flat.items:
        it.name, it.path, it.bn = fix(it.name), fix(it.path), fix(it.bn)
        it.scope = fix(it.scope) or ""
        it.inputs = [fix(s) for s in it.inputs]
    flat.result = fix(flat.result)
    flat.heads = {h: fix(v) for h, v in flat.heads.items()}
    flat.classes = {fix(k): v for k, v in flat.classes.items()}
    return flat, list(rules.values())


def prune(flat: Flat) -> Flat:
    """Only what the result depends on (a traced module may compute values it never returns)."""
    by_name = {it.name: it for it in flat.items}
    need, todo = set(), [flat.result, *flat.heads.values()]
    while todo:
        n = todo.pop()
        if n in need or n == "input":
            continue
        need.add(n)
        todo += by_name[n].inputs
    return Flat(flat.name, flat.input, [it for it in flat.items if it.name in need], flat.source, flat.classes,
                flat.result, flat.heads)


def own_concats(flat: Flat) -> Flat:
    """A concatenation of a sub-module's input and its output (DenseNet's layer: its new features after
    the ones it read) belongs to that sub-module: it is named inside it, so every such layer is the same
    block ("concatenated to its input", as the hand-written specs say). Only the name changes."""
    taken = {it.name for it in flat.items}
    for c in list(flat.items):
        facts = registry().facts(c.fields["op"])
        if facts is None or facts.join != "stack" or len(c.inputs) != 2:
            continue
        a, b = c.inputs
        parts = b.split(".")
        for k in range(len(parts) - 1, 0, -1):
            path = ".".join(parts[:k])
            if c.name.startswith(path + "."):
                break                                   # it is inside already
            members = {it.name for it in flat.items if it.name.startswith(path + ".")}
            entries = {s for it in flat.items if it.name in members for s in it.inputs if s not in members}
            leaving = {it.name for it in flat.items if it.name not in members and set(it.inputs) & members}
            if entries != {a} or leaving != {c.name} or {flat.result, *flat.heads.values()} & members:
                continue
            old, name, n = c.name, f"{path}.concat", 1
            while name in taken:
                name, n = f"{path}.concat_{n}", n + 1
            taken.add(name)
            taken.discard(old)
            c.name, c.scope = name, path
            for it in flat.items:
                it.inputs = [name if s == old else s for s in it.inputs]
            flat.result = name if flat.result == old else flat.result
            flat.heads = {h: name if v == old else v for h, v in flat.heads.items()}
            break
    return flat


def header(flat: Flat, schema: str) -> list[str]:
    return [f"# yaml-language-server: $schema={schema}",
            "#",
            f"# Imported by archc from {flat.source} ('archc import'). Edit it like any spec: archc flops,",
            "# check, draw and build read it; built, the module's state_dict keys are the original's.",
            f"name: {scalar(flat.name)}",
            f"input: {scalar(list(flat.input))}"]


def spec_text(flat: Flat, schema: str = "archc.schema.json", blocks: bool = True) -> str:
    """The spec's YAML text."""
    flat, hyphens = _unhyphenate(own_concats(prune(fuse(flat))))
    lines = header(flat, schema)
    body = None
    if blocks:
        body = block_lines(flat)
    if body is None:
        body = ["", "layers:"]
        previous = "input"
        for it in flat.items:
            body.append(layer_line(it.name, it.fields, it.inputs, previous, "  "))
            previous = it.name
    lines += body
    rules = flat.rules or [
        [f"^{re.escape(it.name)}/conv$", it.name] for it in flat.items if it.bn] + [
        [f"^{re.escape(it.name)}/bn$", it.bn] for it in flat.items if it.bn]
    # the conv / BatchNorm rules first (they read the spec's names), the hyphens given back last
    rules = sorted(rules, key=lambda r: (not r[0].startswith("^"), r[0].endswith("/bn$"))) + hyphens
    if rules:
        lines += ["", "torch:", "  rename:     # module paths where a spec name cannot be one (a conv and its BatchNorm are one layer)"]
        lines += [f"    - {scalar(r)}" for r in rules]
    if flat.heads or (flat.items and flat.result != flat.items[-1].name):
        lines += ["", "outputs:", f"  main: {{layer: {scalar(flat.result)}}}"]
        lines += [f"  {scalar(k)}: {{layer: {scalar(v)}, training_only: true}}" for k, v in flat.heads.items()]
    return "\n".join(lines) + "\n"
