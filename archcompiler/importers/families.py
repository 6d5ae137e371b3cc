"""Finding repeated structure: a *container* is a module path that holds several layers, reads one value from
outside and gives one value to the outside (torchvision's Bottleneck, Inception, InvertedResidual); its
*signature* is its layers' names relative to it, their ops, their non-numeric fields and their wiring. Containers
of one signature (or of one with some layers left out) form a family; families are chosen greedily by how many
layers they cover. :mod:`.blocks` writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..ops import registry
from .flat import Flat, Item
from .text import scalar

IN = "in"


@dataclass
class Instance:
    path: str
    members: dict[str, Item]            # relative name -> item, in order
    entry: str                          # the value read from outside (an item name or "input")
    output: str                         # the relative name of the member read outside
    in_channels: int
    first: int                          # position of its first layer in the model


@dataclass
class Family:
    sig: tuple                          # the full signature (every optional layer present)
    instances: list[Instance] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(i.members) for i in self.instances)


def _numeric(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or \
        (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v))


def _rel(name: str, inst: Instance, members: dict[str, Item]) -> str:
    prefix = inst.path + "."
    return name[len(prefix):] if name.startswith(prefix) and name[len(prefix):] in members else IN


def _signature(inst: Instance) -> tuple:
    out = []
    for rel, it in inst.members.items():
        ins = [_rel(s, inst, inst.members) for s in it.inputs]
        facts = registry().facts(it.fields["op"])
        if facts is not None and facts.join == "sum" and IN in ins:       # the shortcut last: the branch is what stays when
            ins = [s for s in ins if s != IN] + [IN]     # the add is left out (an add's first input)
            it.inputs = [s for s in it.inputs if s == inst.entry][:0] + \
                [s for s in it.inputs if s != inst.entry] + [inst.entry]
        fixed = tuple(sorted((k, scalar(v)) for k, v in it.fields.items() if not _numeric(v)))
        if it.bn:
            fixed += (("bn", it.bn[len(inst.path) + 1:] if it.bn.startswith(inst.path + ".") else it.bn),)
        out.append((rel, tuple(sorted(it.fields)), fixed, tuple(ins)))
    return tuple(out), inst.output


def _reduce(sig: tuple, removed: set[str]) -> tuple:
    members, output = sig
    first = {m[0]: (m[3][0] if m[3] else IN) for m in members}

    def follow(n: str) -> str:
        while n in removed:
            n = first[n]
        return n
    def ins(m: tuple) -> tuple:
        out = [follow(s) for s in m[3]]
        if ("op", "add") in m[2] and IN in out:       # the shortcut last, as _signature writes it
            out = [s for s in out if s != IN] + [IN]
        return tuple(out)
    kept = tuple((m[0], m[1], m[2], ins(m)) for m in members if m[0] not in removed)
    return kept, follow(output)


def _containers(flat: Flat) -> list[Instance]:
    items = flat.items
    pos = {it.name: i for i, it in enumerate(items)}
    shapes = {it.name: it.shape for it in items}
    shapes["input"] = tuple(flat.input)
    outside_readers: dict[str, set[str]] = {}
    for it in items:
        for s in it.inputs:
            outside_readers.setdefault(s, set()).add(it.name)
    for s in [flat.result, *flat.heads.values()]:
        outside_readers.setdefault(s, set()).add("<output>")
    paths: set[str] = set()
    for it in items:
        parts = it.name.split(".")
        for k in range(1, len(parts)):
            paths.add(".".join(parts[:k]))
    out = []
    for path in sorted(paths):
        prefix = path + "."
        members = {it.name[len(prefix):]: it for it in items if it.name.startswith(prefix)}
        if len(members) < 2:
            continue
        names = {it.name for it in members.values()}
        entries = {s for it in members.values() for s in it.inputs if s not in names}
        leaving = [rel for rel, it in members.items() if outside_readers.get(it.name, set()) - names]
        if len(entries) != 1 or len(leaving) != 1:
            continue
        entry = next(iter(entries))
        out.append(Instance(path, members, entry, leaving[0], int(shapes[entry][0]),
                            min(pos[it.name] for it in members.values())))
    return out


def _families(instances: list[Instance]) -> list[tuple[Family, dict[str, set[str]]]]:
    by_sig: dict[tuple, list[Instance]] = {}
    for inst in instances:
        by_sig.setdefault(_signature(inst), []).append(inst)
    sigs = sorted(by_sig, key=lambda s: -len(s[0]))
    families: list[Family] = []
    removed_of: list[dict[str, set[str]]] = []
    for sig in sigs:
        names = {m[0] for m in sig[0]}
        for fam, removed in zip(families, removed_of):
            full = {m[0] for m in fam.sig[0]}
            if names < full and _reduce(fam.sig, full - names) == sig:
                fam.instances += by_sig[sig]
                for inst in by_sig[sig]:
                    removed[inst.path] = full - names
                break
        else:
            families.append(Family(sig, list(by_sig[sig])))
            removed_of.append({inst.path: set() for inst in by_sig[sig]})
    return list(zip(families, removed_of))


def _choose(flat: Flat) -> list[tuple[Family, dict[str, set[str]]]]:
    chosen: list[tuple[Family, dict[str, set[str]]]] = []
    used: list[str] = []
    # the layers a block saves: what its uses hold less what its definition holds
    ranked = sorted(_families(_containers(flat)), key=lambda f: -(f[0].size - len(f[0].sig[0])))
    for fam, removed in ranked:
        keep = [i for i in fam.instances
                if not any(i.path == u or i.path.startswith(u + ".") or u.startswith(i.path + ".") for u in used)]
        if len(keep) < 2 or len({i.path for i in keep}) != len(keep):
            continue
        if not any(removed[i.path] == set() for i in keep):
            continue            # the full signature itself must be used (its layers' fields come from it)
        if sum(len(i.members) for i in keep) < len(fam.sig[0]) + len(keep) + 3:
            continue            # it would not shorten the spec (ConvNeXt's downsampling: two layers, three uses)
        fam.instances = sorted(keep, key=lambda i: i.first)
        used += [i.path for i in keep]
        chosen.append((fam, {i.path: removed[i.path] for i in keep}))
    return chosen


def _ident(text: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "x"
    return out if not out[0].isdigit() else "n" + out


def _block_name(fam: Family, classes: dict[str, str], taken: set[str]) -> str:
    cls = classes.get(fam.instances[0].path, "")
    if cls and cls not in ("Module", "Sequential", "ModuleList"):
        base = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", cls).lower()
    else:
        base = re.sub(r"\d.*$", "", fam.instances[0].path.rsplit(".", 1)[-1]) or "block"
    base = _ident(base)
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _by_position(vec: list, pos: list[int], total: int) -> str | None:
    """An expression in the use's position i among all N uses of blocks that gives each use's value, where
    one does for at least three uses: torchvision's stochastic depth rate, linear in the block's position
    (``p * i / (N - 1)``, EfficientNet's ``p * i / N``), and Swin's shift of every other block
    (``(i % 2) * s``). A rate computed another way (np.linspace) may differ from it in the last bit."""
    present = [(x, i) for x, i in zip(vec, pos) if x is not None]
    if len(present) < 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in present):
        return None
    top = max(present, key=lambda p: abs(p[0]))
    if isinstance(top[0], int) and top[0] and all(x == (i % 2) * top[0] for x, i in present):
        return f"(i % 2) * {top[0]}"
    # i / (N - 1), i / N; and (i + 1) / (N + 1) where the first of the network's N + 1 such blocks is no use of
    # this block (EfficientNet's first MBConv, without an expansion)
    for shift, div, text in ((0, total - 1, "i / (N - 1)"), (0, total, "i / N"), (1, total + 1, "(i + 1) / (N + 1)")):
        if not top[0] or not top[1] + shift or div <= 0:
            continue
        c = float(f"{top[0] * div / (top[1] + shift):.12g}")
        if all(abs(c * (i + shift) / div - x) <= 1e-12 * max(1.0, abs(x)) for x, i in present):
            return f"{scalar(c)} * {text}"
    return None
