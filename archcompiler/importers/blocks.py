"""Repeated structure: sub-modules with the same inner graph become one block, consecutive uses a table.

A *container* is a module path that holds several layers, reads one value from outside and gives
one value to the outside (torchvision's Bottleneck, Inception, InvertedResidual). Its *signature* is
its layers' names relative to it, their ops, their non-numeric fields and their wiring; numbers
(channels, strides, kernels) may differ and become the block's arguments. A container whose
signature is another's with some layers left out (ResNet's blocks without a projection shortcut)
uses the same block, the missing layers under a ``when:`` condition that archc evaluates on each
use (the same rule as the hand-written specs: where it is false, what reads the layer reads its
input). Families are chosen greedily by how many layers they cover; the rest stay plain layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .families import IN, Family, Instance, _block_name, _by_position, _choose, _ident, _numeric, _rel
from .flat import Flat, Item
from .text import layer_line, scalar, without_defaults


@dataclass
class Block:
    name: str
    family: Family
    args: list[str]
    values: dict[str, dict[str, Any]]        # instance path -> argument -> value
    fields: dict[str, dict[str, Any]]        # member -> its fields (numbers or expressions)
    when: dict[str, str]                     # member -> condition
    rules: list[list[str]] = field(default_factory=list)     # torch.rename rules its rows need


def _short(rel: str, taken: set) -> str:
    """A member's name for an argument named after it: its last part that is not a number."""
    words = [w for w in rel.split(".") if not w.isdigit()]
    short = _ident(words[-1]) if words else _ident(rel)
    return short if short not in taken else _ident(rel)


def _arguments(name: str, fam: Family, removed: dict[str, set[str]], position: dict[str, int]) -> Block:
    """The block of a family: the fields of its fullest use, each number that differs between uses written
    as an expression of another (``in_channels * 4``, ``(kernel - 1) // 2``) or as an argument, the
    arguments' values per use, and a ``when:`` for each layer some uses leave out."""
    insts = fam.instances
    full = next(i for i in insts if not removed[i.path])
    fields = {rel: dict(it.fields) for rel, it in full.members.items()}
    vectors = _vectors(full, insts)
    pos = [position[i.path] for i in insts]
    args: list[str] = []
    vec_of: dict[str, list] = {}
    for (rel, k), vec in vectors.items():
        value = _derived(vec, pos, len(position), [i.in_channels for i in insts], vec_of)
        if value is None:
            value = _new_argument(k, rel, vec, vec_of)
            args.append(value)
        fields[rel][k] = value
    args, vec_of, field_of = _named_by_layer(vectors, fields, args, vec_of)
    _name_constants(fields, full, insts, vectors, field_of, vec_of)
    values = {}
    for j, inst in enumerate(insts):
        vals = {}
        for a in args:
            v = vec_of[a][j]
            vals[a] = v if v is not None else next(x for x in vec_of[a] if x is not None)
        values[inst.path] = vals
    when = _conditions(fam, removed, args, values, fields, position)
    return Block(name, fam, args, values, fields, when)


def _vectors(full: Instance, insts: list[Instance]) -> dict[tuple[str, str], list]:
    """(member, field) -> its value in each use (None where the use leaves the member out), for the
    numeric fields whose values differ between uses."""
    vectors: dict[tuple[str, str], list] = {}
    for rel, it in full.members.items():
        for k, v in it.fields.items():
            if _numeric(v):
                vec = [i.members[rel].fields[k] if rel in i.members else None for i in insts]
                if len({scalar(x) for x in vec if x is not None}) > 1:
                    vectors[(rel, k)] = vec
    return vectors


def _derived(vec: list, pos: list[int], uses: int, ins: list[int], vec_of: dict[str, list]) -> Any:
    """A field's values per use written without a new argument, or None: by the use's position, as an
    argument with the same values (whose missing values it fills in ``vec_of``), from ``in_channels``,
    or from another argument."""
    by_pos = _by_position(vec, pos, uses)
    if by_pos is not None:
        return by_pos
    same = next((a for a, v in vec_of.items()
                 if all(x is None or y is None or scalar(x) == scalar(y) for x, y in zip(vec, v))), None)
    if same is not None:
        vec_of[same] = [y if y is not None else x for x, y in zip(vec, vec_of[same])]
        return same
    channels = _from_channels(vec, ins)
    return channels if channels is not None else _scaled(vec, vec_of)


def _from_channels(vec: list, ins: list[int]) -> str | None:
    """Integer values per use as an expression of each use's ``in_channels`` (equal, a multiple, a
    squeeze: ``in_channels // 4``), or None."""
    present = [(x, c) for x, c in zip(vec, ins) if x is not None]
    if not all(isinstance(x, int) for x, _ in present):
        return None
    if all(x == c for x, c in present):
        return "in_channels"
    ratios = {x // c if x % c == 0 else None for x, c in present}
    if len(ratios) == 1 and None not in ratios:
        return f"in_channels * {ratios.pop()}"
    parts = {c // x for x, c in present if x > 0}       # a squeeze: in_channels // 4
    if len(parts) == 1 and min(parts) > 1 and all(x > 0 and c // min(parts) == x for x, c in present):
        return f"in_channels // {parts.pop()}"
    return None


def _scaled(vec: list, vec_of: dict[str, list]) -> str | None:
    """Integer values per use as an expression of an argument: a multiple of it, or a kernel's "same"
    padding (``(kernel - 1) // 2``); None when none fits."""
    for a, v in vec_of.items():
        pairs = [(x, y) for x, y in zip(vec, v) if x is not None and y is not None]
        if not pairs or not all(isinstance(x, int) and isinstance(y, int) for x, y in pairs):
            continue
        if all(y and x % y == 0 for x, y in pairs):
            r = {x // y for x, y in pairs}
            if len(r) == 1 and r != {1}:
                return f"{a} * {r.pop()}"
        if all(x == (y - 1) // 2 for x, y in pairs):          # a kernel's "same" padding
            return f"({a} - 1) // 2"
    return None


def _new_argument(k: str, rel: str, vec: list, vec_of: dict[str, list]) -> str:
    """A new argument for field ``k`` of member ``rel`` (its values ``vec`` kept in ``vec_of``): named
    after the field, or after the field and the member where the field's name is taken."""
    arg = k if k not in vec_of else _ident(f"{k}_{_short(rel, set())}")
    while arg in vec_of or arg in ("in", "in_channels", "in_height", "in_width", "i", "N"):
        arg += "_"
    vec_of[arg] = list(vec)
    return arg


def _named_by_layer(vectors: dict, fields: dict, args: list[str],
                    vec_of: dict[str, list]) -> tuple[list[str], dict[str, list], dict[str, str]]:
    """Several arguments from one field (an inception's out channels): each named after its layer, in
    ``fields`` too. The arguments, their values, and the field each argument comes from."""
    origin = {}
    for rel, k in vectors:
        if fields[rel][k] in args and fields[rel][k] not in origin:
            origin[fields[rel][k]] = (rel, k)
    rename = {}
    shorts = [_short(r, set()) for r, _ in origin.values()]
    for a, (rel, k) in origin.items():
        if sum(1 for r, kk in origin.values() if kk == k) > 1:
            short = _short(rel, set())
            rename[a] = _ident(f"{k}_{short if shorts.count(short) == 1 else rel}")
    for rel in fields:
        for k, v in fields[rel].items():
            if isinstance(v, str):
                fields[rel][k] = re.sub(r"[A-Za-z_][A-Za-z0-9_]*", lambda m: rename.get(m.group(0), m.group(0)), v)
    vec_of = {rename.get(a, a): v for a, v in vec_of.items()}
    field_of = {rename.get(a, a): k for a, (_, k) in origin.items()}
    return [rename.get(a, a) for a in args], vec_of, field_of


def _name_constants(fields: dict, full: Instance, insts: list[Instance], vectors: dict, field_of: dict[str, str],
                    vec_of: dict[str, list]) -> None:
    """A layer that some uses leave out (a projection shortcut) may hold a field constant where it is present,
    a literal that hides what it follows: where an argument of the same field has that value in each of
    those uses, the field is written as the argument (``stride: stride``, not ``stride: 2``)."""
    for rel, it in full.members.items():
        present = [j for j, inst in enumerate(insts) if rel in inst.members]
        if len(present) == len(insts):
            continue
        for k, v in it.fields.items():
            if (rel, k) in vectors or not _numeric(v):
                continue
            fields[rel][k] = next((a for a, field in field_of.items() if field == k and all(
                vec_of[a][j] is not None and scalar(vec_of[a][j]) == scalar(v) for j in present)), fields[rel][k])


def _conditions(fam: Family, removed: dict[str, set[str]], args: list[str], values: dict, fields: dict,
                position: dict[str, int]) -> dict:
    """A ``when:`` for each layer that some uses leave out: the first of the usual conditions (the
    shape changes: a projection shortcut; it does not: a residual add; not the first block: MaxViT's
    stochastic depth, an nn.Identity where its rate is 0) that holds exactly where the layer is present;
    else a boolean argument."""
    optional = sorted({m for r in removed.values() for m in r})
    out: dict[str, str] = {}
    insts = fam.instances
    out_ch = []
    for inst in insts:
        o = inst.members.get(inst.output)
        out_ch.append(o.shape[0] if o is not None else None)
    channel_exprs = [a for a in args if all(values[i.path][a] == c for i, c in zip(insts, out_ch) if c is not None)]
    for f in fields.values():
        e = f.get("out")
        if isinstance(e, str) and e not in channel_exprs and \
                all(_val(e, values[i.path], i.in_channels) == c for i, c in zip(insts, out_ch) if c is not None):
            channel_exprs.append(e)
    const = {c for c in out_ch if c is not None}
    if len(const) == 1:
        channel_exprs.append(str(const.pop()))
    stride = "stride" if "stride" in args else None
    groups: dict[tuple, list[str]] = {}
    for m in optional:
        groups.setdefault(tuple(m not in removed[i.path] for i in insts), []).append(m)
    for presence, members in groups.items():
        cands = []
        for e in channel_exprs:
            if stride:
                cands.append((f"{stride} != 1 or in_channels != {e}",
                              lambda i, e=e: values[i.path][stride] != 1 or i.in_channels != _val(e, values[i.path], i.in_channels)))
                cands.append((f"{stride} == 1 and in_channels == {e}",
                              lambda i, e=e: values[i.path][stride] == 1 and i.in_channels == _val(e, values[i.path], i.in_channels)))
            cands.append((f"in_channels != {e}", lambda i, e=e: i.in_channels != _val(e, values[i.path], i.in_channels)))
            cands.append((f"in_channels == {e}", lambda i, e=e: i.in_channels == _val(e, values[i.path], i.in_channels)))
        if stride:
            cands.append((f"{stride} != 1", lambda i: values[i.path][stride] != 1))
            cands.append((f"{stride} == 1", lambda i: values[i.path][stride] == 1))
        cands.append(("i > 0", lambda i: position[i.path] > 0))
        found = next((text for text, fn in cands if tuple(bool(fn(i)) for i in insts) == presence), None)
        if found is None:
            flag = _ident(f"has_{members[0]}")
            args.append(flag)
            for i, p in zip(insts, presence):
                values[i.path][flag] = p
            found = flag
        for m in members:
            out[m] = found
    return out


def _val(e: str, vals: dict, in_channels: int = 0) -> Any:
    """The value of an argument expression this module writes: a number, a name, or ``name * k``."""
    name, _, factor = e.partition(" * ")
    base = int(name) if name.isdigit() else in_channels if name == "in_channels" else vals.get(name)
    return None if base is None else base * (int(factor) if factor else 1)


def block_lines(flat: Flat) -> list[str] | None:
    """The ``blocks:`` and ``layers:`` sections, or None when nothing repeats."""
    chosen = _choose(flat)
    if not chosen:
        return None
    taken: set[str] = set()
    # i and N of the spec language: each use's position among all the uses of blocks, and how many there are
    uses = sorted((i for fam, _ in chosen for i in fam.instances), key=lambda i: i.first)
    position = {u.path: k for k, u in enumerate(uses)}
    blocks = [_arguments(_block_name(fam, flat.classes, taken), fam, removed, position) for fam, removed in chosen]
    owner: dict[str, tuple[Block, Instance]] = {}
    for b in blocks:
        for inst in b.family.instances:
            for it in inst.members.values():
                owner[it.name] = (b, inst)
    flat.rules = _bn_rules(flat, blocks, owner)
    lines = ["", "blocks:"]
    for b in blocks:
        lines += _block_section(b)
    lines += ["", "layers:"]
    lines += _layer_lines(flat, owner)
    flat.rules = [r for b in blocks for r in b.rules] + flat.rules
    return lines


def _bn_rules(flat: Flat, blocks: list[Block], owner: dict[str, tuple[Block, Instance]]) -> list[list[str]]:
    """The torch.rename rules that give a conv fused with its BatchNorm its module paths back: the plain
    layers' (by name), then the blocks' members' (relative to the use)."""
    rules: dict[str, str] = {}
    for b in blocks:
        full = next(i for i in b.family.instances if not any(m not in i.members for m in b.fields))
        for rel, it in full.members.items():
            if it.bn:
                bn_rel = it.bn[len(full.path) + 1:]
                rules.setdefault(f"/{re.escape(rel)}/conv$", f"/{rel}")
                rules.setdefault(f"/{re.escape(rel)}/bn$", f"/{bn_rel}")
    top = [[f"^{re.escape(it.name)}/conv$", it.name] for it in flat.items if it.bn and it.name not in owner] + \
        [[f"^{re.escape(it.name)}/bn$", it.bn] for it in flat.items if it.bn and it.name not in owner]
    return top + [[k, v] for k, v in rules.items()]


def _block_section(b: Block) -> list[str]:
    """One block's lines under ``blocks:``: its doc, arguments and layers (those of its fullest use)."""
    fam = b.family
    cls = fam.instances[0]
    lines = [f"  {b.name}:", f"    doc: {scalar(f'{len(fam.instances)} uses, the first {cls.path}')}"]
    if b.args:
        lines.append(f"    args: {scalar(b.args)}")
    lines.append("    layers:")
    full = next(i for i in fam.instances if not any(m not in i.members for m in b.fields))
    previous = IN
    rels = list(b.fields)
    for rel in rels:
        it = full.members[rel]
        f = dict(b.fields[rel])
        line_fields = without_defaults(f)
        if rel in b.when:
            line_fields["when"] = b.when[rel]
        ins = [_rel(s, full, full.members) for s in it.inputs]
        lines.append(layer_line(rel, line_fields, ins, previous, "      "))
        previous = rel if rel not in b.when else None   # after a conditional layer, inputs are explicit
    if full.output != rels[-1]:
        lines.append(f"    output: {scalar(full.output)}")
    return lines


def _units(flat: Flat, owner: dict[str, tuple[Block, Instance]]) -> list[tuple[int, Any]]:
    """The top-level units in order: plain layers and block uses (a use where its first layer is)."""
    units: list[tuple[int, Any]] = []
    seen: set[str] = set()
    for pos, it in enumerate(flat.items):
        if it.name in owner:
            b, inst = owner[it.name]
            if inst.path not in seen:
                seen.add(inst.path)
                units.append((pos, (b, inst)))
        else:
            units.append((pos, it))
    return units


def _layer_lines(flat: Flat, owner: dict[str, tuple[Block, Instance]]) -> list[str]:
    """The lines under ``layers:``: plain layers, block uses and tables of consecutive uses; the outputs
    (``flat.result``, ``flat.heads``) are renamed to what the lines call them."""
    units = _units(flat, owner)
    value_name = {name: inst.path for name, (b, inst) in owner.items() if inst.members[inst.output].name == name}
    names = {it.name for it in flat.items} | {p.rpartition(".")[0] for p in flat.classes}

    def ref(n: str) -> str:
        return value_name.get(n, n)

    readers: dict[str, set[str]] = {}
    for it in flat.items:
        for source in it.inputs:
            readers.setdefault(source, set()).add(it.name)
    outputs = {flat.result, *flat.heads.values()}
    lines: list[str] = []
    previous = "input"
    k = 0
    while k < len(units):
        unit = units[k][1]
        if isinstance(unit, Item):
            lines.append(layer_line(unit.name, without_defaults(unit.fields), [ref(s) for s in unit.inputs],
                                    previous, "  "))
            previous = unit.name
            k += 1
            continue
        b = unit[0]
        run = _run(units, k, readers, outputs)
        k += len(run)
        if ref(run[0].entry) != previous:
            first = run.pop(0)
            lines.append(_use_line(b, first, ref(first.entry)))
            previous = first.path
            if not run:
                continue
        rows = _rows(b, run, names)
        if len(rows) == 1 and not rows[0][2]:
            lines.append(_use_line(b, run[0], None))
        else:
            lines += _table(b, [r[:3] for r in rows])
        for name, _, _, insts in rows:
            for inst in insts:
                value_name[inst.members[inst.output].name] = name
        previous = rows[-1][0]
    flat.result = ref(flat.result)
    flat.heads = {h: ref(v) for h, v in flat.heads.items()}
    return lines


def _run(units: list[tuple[int, Any]], k: int, readers: dict[str, set[str]], outputs: set[str]) -> list[Instance]:
    """The run of uses of one block from unit ``k``, each reading the one before, and nothing else reading
    it: a table row names only its last instance's output (DLA's root reads two consecutive trees' outputs)."""
    b, first = units[k][1]
    run = [first]
    while k + len(run) < len(units) and isinstance(units[k + len(run)][1], tuple) \
            and units[k + len(run)][1][0] is b and units[k + len(run)][1][1].entry == \
            run[-1].members[run[-1].output].name \
            and _read_only_by(run[-1], units[k + len(run)][1][1], readers, outputs):
        run.append(units[k + len(run)][1][1])
    return run


def _read_only_by(inst: Instance, following: Instance, readers: dict[str, set[str]], outputs: set[str]) -> bool:
    """Whether ``inst``'s output is read by ``following``'s layers alone (and is no output of the network)."""
    value = inst.members[inst.output].name
    inside = {m.name for m in following.members.values()}
    return value not in outputs and readers.get(value, set()) <= inside


def _rows(b: Block, run: list[Instance], taken: set[str]) -> list[tuple[str, dict, int, list[Instance]]]:
    """(name, arguments, repeat, instances) per row: instances numbered on (``P.0``, ``P.1``, ... as
    nn.Sequential names them, or ``P.layer1``, ``P.layer2``, ... and ``P.encoder_layer_0``, ...) whose
    later ones differ from the first only by stride 1 become one row repeated n times (repeat 0: a row
    of its own). A row's instances are named ``row/k`` in the spec: where the module's names are not
    ``P.k``, a torch.rename rule (in ``b.rules``) gives them back."""
    rows = []
    j = 0
    while j < len(run):
        inst = run[j]
        parent, _, last = inst.path.rpartition(".")
        stem, start = re.fullmatch(r"(.*?)(\d*)", last).groups()
        n = 1
        if start and parent and (start == "0" or stem):
            first = b.values[inst.path]
            later = {**first, "stride": 1} if "stride" in first else first
            while j + n < len(run) and run[j + n].path == f"{parent}.{stem}{int(start) + n}" \
                    and b.values[run[j + n].path] == later:
                n += 1
            numbered = re.compile(re.escape(f"{parent}.{stem}") + r"\d+")
            others = sum(1 for r in run if numbered.match(r.path) and r.path[len(parent) + 1:].startswith(stem))
            name = f"{parent}.{stem.rstrip('_')}" if stem else parent
            free = not stem or name not in taken and not any(t.startswith(name + ".") for t in taken)
            if others == n and n > 1 and free:
                if stem:
                    index = "{index}" if start == "0" else f"{{index + {start}}}"
                    b.rules.append([f"^{re.escape(name)}/\\d+/", f"{parent}.{stem}{index}/"])
                rows.append((name, first, n, run[j:j + n]))
                j += n
                continue
        rows.append((inst.path, b.values[inst.path], 0, [inst]))
        j += 1
    return rows


def _use_line(b: Block, inst: Instance, source: str | None) -> str:
    use: dict[str, Any] = {"name": inst.path, "use": b.name}
    if source is not None:
        use["input"] = source
    if b.args:
        use["args"] = {a: b.values[inst.path][a] for a in b.args}
    return f"  - {scalar(use)}"


def _table(b: Block, rows: list[tuple[str, dict, int]]) -> list[str]:
    out = []
    groups: list[list] = []
    for r in rows:
        if groups and (groups[-1][0][2] > 0) == (r[2] > 0):
            groups[-1].append(r)
        else:
            groups.append([r])
    for g in groups:
        repeat = g[0][2] > 0
        if len(g) == 1 and not repeat:
            use = {"name": g[0][0], "use": b.name}
            if b.args:
                use["args"] = {a: g[0][1][a] for a in b.args}
            out.append(f"  - {scalar(use)}")
            continue
        cols = ["name", *b.args] + (["repeat"] if repeat else [])
        out += ["  - table:", f"      use: {b.name}", f"      columns: {scalar(cols)}", "      rows:"]
        for name, vals, n in g:
            out.append(f"        - {scalar([name, *[vals[a] for a in b.args]] + ([n] if repeat else []))}")
    return out
