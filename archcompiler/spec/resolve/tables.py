"""The resolver's tables and repeats, blocks and their instances (a part of :class:`~archcompiler.spec.resolve.Resolver`)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from ...errors import Location, error
from .. import expr
from ..base import suggest
from ..diagnose import pydantic_errors
from ..document import BlockDef, BlockUse, Table
from ..layers import NAME_PATTERN
from ..limits import MAX_BLOCK_NESTING, MAX_LAYERS, MAX_NAME_CHARS
from ..resolved import Instance
from ..source import YDict, YList, locate, plain
from .scope import CLAIM_COLUMNS, REPEAT, SHAPE_NAMES, _Located, _logical, _Ref, _Scope, _Stop

_FAILED = object()      # an argument whose value could not be computed (and was said)


@dataclass(frozen=True)
class _Use:
    """A block used at one place: a ``use:`` entry, a table's row, or one instance of a repeated row.
    What it names and where it stands, for its messages and the instance it records."""
    name: str
    block: str                      # the block's name as written (or a parameter whose value names one)
    args: dict
    args_node: Any                  # the arguments' YAML mapping (for locations); None for a table row
    input_ref: str | None           # the entry's ``input:``, None for the previous layer
    claims: Any
    item: Any                       # the entry or row (for locations)
    ipath: tuple
    from_table: bool
    arg_src: dict[str, tuple[Location, str]] | None = None     # a table row's cells: each argument's place

    def where(self, file: str) -> Location:
        """The entry's place in the spec (the file itself when the entry has none)."""
        return getattr(self.item, "loc", Location(file))

    def logical(self, scope: _Scope) -> str:
        """The dotted path messages name it by."""
        return f"{scope.prefix}{self.name}" if scope.prefix else f"{_logical(self.ipath[:-1])}.{self.name}"


class Tables:
    """The resolver's tables and repeats; its state is :class:`Resolver`'s."""

    # ------------------------------------------------------------------ blocks
    def _instance(self, use: _Use, scope: _Scope, previous: str, top_level: bool) -> str:
        """One block instance (see :meth:`_define_instance`); a name whose instance failed is marked
        failed, so that what reads it is not said wrong again."""
        before = len(self.errors)
        out = self._define_instance(use, scope, previous, top_level)
        if len(self.errors) > before and use.name not in scope.local:
            scope.failed.add(use.name)
        return out

    def _define_instance(self, use: _Use, scope: _Scope, previous: str, top_level: bool) -> str:
        """One block instance: its arguments evaluated, its layers expanded in a scope of their own;
        returns the node of its output (``previous`` when it fails)."""
        where, logical = use.where(self.file), use.logical(scope)
        if len(self.instances) > MAX_LAYERS:     # blocks whose layers are all skipped add no layers
            raise _Stop(error(f"the spec expands to more than {MAX_LAYERS:,} block instances", logical, where,
                              hint="repeats multiply; is a row repeated more often than meant?"))
        block_name = self._block_name(use.block, scope)
        block = self._usable_block(block_name, use, scope, where, logical)
        if block is None:
            return previous
        values, arg_src, ok = self._block_args(block, block_name, use, scope, logical)
        missing = [a for a in block.arg_names() if a not in values and a not in use.args]   # a failed value: said above
        if missing:
            self.errors.append(error(f"block {block_name!r} needs argument(s) {', '.join(missing)}",
                                     logical, where, hint=f"arguments: {', '.join(block.arg_names())}"))
            ok = False
        full = self._claim_name(use.name, scope, where, logical)
        if not ok or full is None:
            return previous
        claim_model = self._claims(use.claims, logical, where, scope)
        block_input = self._input_placeholder(use, scope, previous, full)
        inherited = {k: v for k, v in scope.value_src.items() if k not in values}   # params used bare inside
        position: dict[str, int] = {}
        if scope.block_input is None:         # a top-level instance: its position in the network
            position = {"i": self.position, "N": max(self.count, self.position + 1)}
            self.position += 1
        inner = _Scope(full + "/", {**position, **scope.values, **values},
                       {**inherited, **{a: (loc, path) for a, (loc, path) in arg_src.items()}},
                       block_input=block_input, stack=(*scope.stack, block_name), group=full,
                       row=scope.row if scope.row is not None else full, args=frozenset(values))
        output = self._block_output(block, block_name, inner, block_input)
        self._record(use, scope, top_level, Instance(full, block_name, values, output, claim_model, where,
                                                     scope.group, use.from_table))
        return output

    def _usable_block(self, block_name: str, use: _Use, scope: _Scope, where: Location,
                      logical: str) -> BlockDef | None:
        """The block ``use`` names, or None (said) when there is none, or using it here would nest
        blocks too deep or make a block use itself."""
        blocks: dict[str, BlockDef] = self.model.blocks
        if block_name not in blocks:
            item = use.item
            self.errors.append(error(f"unknown block {block_name!r}", f"{logical}.use",
                                     locate(item, ("use",)) if isinstance(item, dict) else where,
                                     value=block_name, hint=suggest(block_name, set(blocks)) or
                                     "define it under 'blocks:'"))
            return None
        if len(scope.stack) >= MAX_BLOCK_NESTING:
            self.errors.append(error(f"blocks are nested more than {MAX_BLOCK_NESTING} deep", logical, where))
            return None
        if block_name in scope.stack:
            chain = " -> ".join((*scope.stack, block_name))
            self.errors.append(error(f"block {block_name!r} uses itself ({chain})", logical, where,
                                     hint="blocks cannot be recursive"))
            return None
        return blocks[block_name]

    def _block_args(self, block: BlockDef, block_name: str, use: _Use, scope: _Scope,
                    logical: str) -> tuple[dict[str, Any], dict[str, tuple[Location, str]], bool]:
        """The instance's argument values (the block's defaults, then ``use``'s arguments evaluated),
        each argument's place, and whether all of them were good (each bad one is said)."""
        declared = block.arg_names()
        values = dict(block.arg_defaults())
        arg_src = dict(use.arg_src or {})
        ok = True
        for arg, value in use.args.items():
            aloc = arg_src.get(arg, (locate(use.args_node, (arg,), key=True), f"{logical}.{arg}"))
            if arg not in declared:
                self.errors.append(error(f"block {block_name!r} has no argument {arg!r}", aloc[1], aloc[0],
                                         value=arg, hint=suggest(arg, set(declared))))
                ok = False
                continue
            if isinstance(value, str):
                value = self._arg_value(value, scope, aloc)
                if value is _FAILED:
                    ok = False
                    continue
            values[arg] = plain(value)
            arg_src[arg] = aloc
        return values, arg_src, ok

    def _arg_value(self, value: str, scope: _Scope, aloc: tuple[Location, str]) -> Any:
        """An argument's expression evaluated; inside a block it may read that block's input (RegNetY's
        SE width). ``_FAILED`` (said) when it cannot be."""
        try:
            return expr.evaluate(value, self._with_input_shape(value, scope), self.used)
        except _Located as exc:
            d = exc.diagnostic
            self.errors.append(error(d.message, aloc[1], aloc[0], hint=d.hint, value=d.value))
        except expr.ExprError as exc:
            if exc.unknown in SHAPE_NAMES and scope.block_input is None and exc.unknown not in scope.values:
                self.errors.append(error(f"{exc.unknown!r} is the shape of a block's input; at the top "
                                         "level there is none", aloc[1], aloc[0], value=value,
                                         hint="a block used inside a block may read its input's shape"))
            elif exc.unknown not in self.failed_params:
                self.errors.append(error(str(exc), aloc[1], aloc[0], value=value))
        return _FAILED

    def _input_placeholder(self, use: _Use, scope: _Scope, previous: str, full: str) -> str:
        """``@full``: the placeholder an instance's (or a repeated row's) layers read as their input.
        Its reference (``use``'s ``input:``, else ``previous``) is resolved in the outer scope, known
        before the layers expand: their conditions may ask for its shape."""
        placeholder = f"@{full}"
        item = use.item
        iloc = locate(item, ("input",)) if isinstance(item, dict) and "input" in item else use.where(self.file)
        ref = (_Ref(None, previous, scope, iloc, None, placeholder) if use.input_ref is None else
               _Ref(None, use.input_ref, scope, iloc, f"{use.logical(scope)}.input", placeholder))
        self.pending.append(ref)
        self.input_refs[placeholder] = ref
        return placeholder

    def _block_output(self, block: BlockDef, block_name: str, inner: _Scope, block_input: str) -> str:
        """Expand the block's layers in ``inner``; the node of its output (its ``output:`` layer, else
        its last)."""
        raw_layers = self.doc["blocks"][block_name]["layers"]      # keeps source locations
        output = self._items(raw_layers, ("blocks", block_name, "layers"), inner,
                             default_input=block_input, top_level=False)
        if block.output is not None:
            if block.output not in inner.local:
                self.errors.append(error(f"block {block_name!r} has no layer {block.output!r} to return",
                                         f"blocks.{block_name}.output",
                                         locate(self.doc, ("blocks", block_name, "output")),
                                         hint=suggest(block.output, set(inner.local))))
            else:
                output = inner.local[block.output]
        return output

    def _record(self, use: _Use, scope: _Scope, top_level: bool, instance: Instance) -> None:
        """Keep an instance (or a repeated row's group): its name in the scope, and a row of the
        network's table when it stands at the top level."""
        scope.local[use.name] = instance.output
        scope.local_loc[use.name] = instance.loc
        self.instances[instance.name] = instance
        if top_level and scope.row is None:
            self.rows.append(instance.name)

    def _table(self, item: dict, ipath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        raw = item["table"]
        try:
            table = Table.model_validate(raw)
        except ValidationError as exc:
            self.errors += pydantic_errors(exc, raw, f"{_logical(ipath)}.table", fallback=locate(item, ("table",)))
            return previous
        columns = table.columns
        rows = raw["rows"]
        bad_columns = self._check_columns(table, raw, f"{_logical(ipath)}.table.columns", scope)
        for j, row in enumerate(rows):
            rpath = ipath + ("table", "rows", j)
            rloc = rows.where(j) if isinstance(rows, YList) else Location(self.file)
            if isinstance(row, dict):
                if "use" in row:
                    previous = self._items_one(row, rpath, scope, previous, top_level)
                else:
                    previous = self._layer(row, rpath, scope, previous, top_level)
                continue
            if bad_columns:                  # said once, at the columns line: the rows' names are known
                k = columns.index("name")
                if isinstance(row, list) and len(row) > k and isinstance(row[k], str):
                    scope.failed.add(row[k])
                continue
            if len(row) != len(columns):
                self.errors.append(error(
                    f"row has {len(row)} cells but the table has {len(columns)} columns "
                    f"({', '.join(columns)})", _logical(rpath), rloc, hint="one cell per column, in order"))
                continue
            cells = dict(zip(columns, row))
            name = str(cells["name"])
            row_path = f"{_logical(ipath[:-1])}.{name}"
            if not isinstance(cells["name"], str) or len(name) > MAX_NAME_CHARS or not re.match(NAME_PATTERN, name):
                k = columns.index("name")
                self.errors.append(error(f"{name[:60]!r} is not a layer name", f"{_logical(rpath)}.name",
                                         row.where(k) if isinstance(row, YList) else rloc, value=name,
                                         hint="use letters, digits, '_', '.' and '-'"))
                continue
            cell_src = {c: (row.where(k) if isinstance(row, YList) else rloc, f"{row_path}.{c}")
                        for k, c in enumerate(columns)}
            claims = {c: cells[c] for c in CLAIM_COLUMNS if c in cells and cells[c] is not None}
            counted = table.count_columns()
            args = {c: v for c, v in cells.items() if c != "name" and c not in counted and c not in CLAIM_COLUMNS}
            claims_node = YDict(loc=rloc)
            for c, v in claims.items():
                claims_node.put(c, v, cell_src[c][0])
            use = _Use(name, table.use, args, None, None, claims_node or None, row, rpath, True, cell_src)
            if table.repeat in cells:
                previous = self._repeated(use, scope, previous, top_level, cells[table.repeat],
                                          cell_src[table.repeat], table.repeat)
                continue
            if not table.repeat.isidentifier():       # an expression over the row's counted columns
                given = {c: cells[c] for c in counted}
                previous = self._repeated(use, scope, previous, top_level, table.repeat,
                                          (locate(raw, ("repeat",)), f"{row_path}.repeat"), REPEAT, given)
                continue
            previous = self._instance(use, scope, previous, top_level)
        return previous

    def _check_columns(self, table: Table, raw: dict, path: str, scope: _Scope) -> bool:
        """One error per wrong column, at the ``columns:`` line, instead of one per row; True if any."""
        block = self.model.blocks.get(self._block_name(table.use, scope))
        if block is None:
            return False                     # the rows say 'unknown block' (once: they are deduplicated)
        declared = block.arg_names()
        known = {"name", *table.count_columns(), *CLAIM_COLUMNS, *declared}
        errors, misspelt = [], set()
        for k, column in enumerate(table.columns):
            if column not in known:
                misspelt.update(difflib.get_close_matches(str(column), declared, n=1, cutoff=0.6))
                errors.append(error(f"block {table.use!r} has no argument {column!r}", f"{path}[{k}]",
                                    locate(raw, ("columns", k)), value=column,
                                    hint=suggest(column, set(declared)) or "define it under the block's 'args:'"))
        defaults = block.arg_defaults()
        missing = [a for a in declared if a not in table.columns and a not in defaults and a not in misspelt]
        if missing:
            errors.append(error(f"the table has no column for argument(s) {', '.join(missing)} of block "
                                f"{table.use!r}", path, locate(raw, ("columns",)),
                                hint=f"its arguments: {', '.join(declared)}"))
        self.errors += errors
        return bool(errors)

    def _items_one(self, row: dict, rpath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        try:
            use = BlockUse.model_validate(row)
        except ValidationError as exc:
            self.errors += pydantic_errors(exc, row, _logical(rpath))
            return previous
        return self._use(use, row, rpath, scope, previous, top_level)

    def _use(self, use: BlockUse, item: dict, ipath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        """A ``use:`` entry: one instance, ``repeat`` of them, or none where ``when`` is false."""
        if use.when is not None:
            logical = f"{scope.prefix}{use.name}" if scope.prefix else f"{_logical(ipath[:-1])}.{use.name}"
            holds = self._condition(use.when, scope, locate(item, ("when",)), f"{logical}.when")
            if holds is None:
                scope.failed.add(use.name)
                return previous
            if not holds:
                return self._skip(use.name, [use.input] if use.input else None, scope, previous,
                                  getattr(item, "loc", Location(self.file)), logical)
        args = dict(item.get("args") or {})
        entry = _Use(use.name, use.use, args, item.get("args"), use.input, item.get("claims"), item, ipath, False)
        if use.repeat is not None:
            count_src = (locate(item, ("repeat",)), f"{_logical(ipath)}.repeat")
            return self._repeated(entry, scope, previous, top_level, use.repeat, count_src)
        return self._instance(entry, scope, previous, top_level)

    # ------------------------------------------------------------------ repeats, conditions, positions
    def _repeat_count(self, value: Any, scope: _Scope, src: tuple[Location, str], report: bool = True,
                      cells: dict | None = None) -> int | None:
        """A row's repeat count: a whole number in [1, MAX_LAYERS], or an expression giving one (over
        the parameters, and ``cells``: the row's counted columns, where the table's repeat is an expression)."""
        try:
            values = scope.values
            if cells:
                values = {**values, **{c: expr.evaluate(v, values, self.used) if isinstance(v, str) else v
                                       for c, v in cells.items()}}
            n = expr.evaluate(value, values, self.used) if isinstance(value, str) else value
        except expr.ExprError as exc:
            if report and exc.unknown not in self.failed_params:
                known = sorted(scope.values)
                self.errors.append(error(str(exc), src[1], src[0], value=value,
                                         hint=suggest(exc.unknown, known) if exc.unknown and known else None))
            return None
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LAYERS:
            if report:
                self.errors.append(error(f"repeat takes a whole number from 1 to {MAX_LAYERS:,}, not {n!r}",
                                         src[1], src[0], value=value,
                                         hint="the paper's 'x3' is repeat 3; leave the row out for none"))
            return None
        return n

    @staticmethod
    def _may_exist(entry: dict, scope: _Scope) -> bool:
        """False only for a ``use:`` entry whose ``when`` is false over the parameters (EfficientNetV2's
        seventh stage in the S variant): it makes no instances, so N does not count it."""
        when = entry.get("when")
        if when is False:
            return False
        if not isinstance(when, str):
            return True
        try:
            return bool(expr.evaluate(when, scope.values))
        except expr.ExprError:
            return True

    def _count_instances(self, items: Any, scope: _Scope) -> int:
        """N: the block instances the top level will make (each repeat counted), before expanding."""
        n = 0
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            entries: list[Any] = [item]
            repeat_cell = None
            table = item.get("table")
            if isinstance(table, dict):
                columns = table.get("columns") if isinstance(table.get("columns"), list) else []
                entries = table.get("rows") if isinstance(table.get("rows"), list) else []
                repeat = table.get("repeat") if isinstance(table.get("repeat"), str) else REPEAT
                repeat_cell = columns.index(repeat) if repeat in columns else None
                if not repeat.isidentifier():       # an expression over the row's columns
                    try:
                        named = [c for c in expr.names(repeat) if c in columns]
                    except expr.ExprError:
                        named = []
                    for entry in entries:
                        if isinstance(entry, list) and len(entry) == len(columns):
                            cells = {c: entry[columns.index(c)] for c in named}
                            n += self._repeat_count(repeat, scope, (Location(), ""), report=False, cells=cells) or 1
                        elif isinstance(entry, dict) and "use" in entry and self._may_exist(entry, scope):
                            n += self._repeat_count(entry.get(REPEAT, 1), scope, (Location(), ""), report=False) or 1
                    continue
            for entry in entries:
                if isinstance(entry, dict):
                    if "use" in entry and self._may_exist(entry, scope):
                        count = self._repeat_count(entry.get(REPEAT, 1), scope, (Location(), ""), report=False)
                        n += count or 1
                elif isinstance(entry, list):
                    value = entry[repeat_cell] if repeat_cell is not None and len(entry) > repeat_cell else 1
                    n += self._repeat_count(value, scope, (Location(), ""), report=False) or 1
        return n

    def _repeated(self, use: _Use, scope: _Scope, previous: str, top_level: bool, count_value: Any,
                  count_src: tuple[Location, str], count_name: str = REPEAT, count_cells: dict | None = None) -> str:
        """A row repeated ``count`` times (the paper's ``x3``): a group ``name`` holding the instances
        ``name/0`` ... in a chain; the first takes the row's arguments and input, the others stride 1."""
        where, logical = use.where(self.file), use.logical(scope)
        count = self._repeat_count(count_value, scope, count_src, cells=count_cells)
        block = self._block_name(use.block, scope)
        full = self._claim_name(use.name, scope, where, logical)
        if count is None or full is None:
            scope.failed.add(use.name)
            return previous
        claim_model = self._claims(use.claims, logical, where, scope)
        group_input = self._input_placeholder(use, scope, previous, full)
        self.instances[full] = None       # keeps the group before its instances; set below
        inner = _Scope(full + "/", scope.values, scope.value_src, block_input=scope.block_input,
                       stack=scope.stack, group=full, row=scope.row if scope.row is not None else full,
                       args=scope.args)
        blocks = self.model.blocks
        stride = blocks[block].stride if block in blocks else "stride"
        has_stride = block in blocks and stride in blocks[block].arg_names()
        last = group_input
        before = len(self.errors)
        for k in range(count):
            kargs = dict(use.args) if k == 0 or not has_stride else {**use.args, stride: 1}
            last = self._instance(replace(use, name=str(k), args=kargs, input_ref=None, claims=None), inner, last,
                                  top_level)
            if len(self.errors) > before:
                break                     # the same mistake in every repeat says it once
        values = {**{k: plain(v) for k, v in use.args.items()},
                  **{k: plain(v) for k, v in (count_cells or {}).items()}, count_name: count}
        self._record(use, scope, top_level, Instance(full, block, values, last, claim_model, where, scope.group,
                                                     use.from_table))
        return last

    def _block_name(self, name: str, scope: _Scope) -> str:
        """``use:`` names a block, or a parameter (a variant row) whose value names one."""
        if name not in self.model.blocks and isinstance(scope.values.get(name), str):
            self.used.add(name)
            return scope.values[name]
        return name
