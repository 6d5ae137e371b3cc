"""From a merged document to a :class:`~.resolved.Spec`: evaluate parameters, expand blocks and
table rows, substitute expressions and defaults, validate every concrete layer, and resolve
references by name.  All problems are collected and raised together as one :class:`SpecError`.
"""

from __future__ import annotations

import difflib
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..errors import Diagnostic, Location, SpecError, error
from ..ops import KNOWN_PLUGINS, LAYERS, registry
from . import expr
from .base import suggest
from .diagnose import pydantic_errors
from .document import BlockDef, BlockUse, Document, Table
from .fields import INTEGER, NUMERIC, STRINGS
from .layers import NAME_PATTERN, Claims
from .limits import MAX_BLOCK_NESTING, MAX_DIM, MAX_LAYERS, MAX_NAME_CHARS
from .params import evaluate_params, unused_params
from .resolved import Choice, Instance, Layer, Output, Spec
from .source import YDict, YList, locate, plain
from .variants import choose_variant, mentioned_in_blocks, mentioned_outside_params

BLOCK_INPUT = "in"          # inside a block, the block's input
NET_INPUT = "input"         # at top level, the network's input image
CLAIM_COLUMNS = ("output", "params", "ops", "depth")
REPEAT = "repeat"           # a table column (and a key of a block use): instances in a row
POSITION = ("i", "N")       # inside a block: its position among the network's block instances
# what a condition ('when') may ask of the block's input, besides arguments and parameters
SHAPE_NAMES = ("in_channels", "in_height", "in_width")
_RAW_FIELDS = {"name", "op", "input", "inputs", "doc", "claims"}

def layer_shape(layer: Any, shapes: list) -> Any:
    """The output shape of one validated layer for its input shapes, by its op's facts (the op
    registry's ``layer_shape``); raises ``ValueError`` for shapes the op refuses. Conditions on a
    block's input shape need it."""
    return registry().layer_shape(layer, shapes)


def unknown_op_hint(op: Any) -> str:
    """What to say of an op no installed package provides: the package that does, where archc knows
    one, else the closest op's name."""
    if isinstance(op, str) and op in KNOWN_PLUGINS:
        return f"the op {op!r} comes from the package {KNOWN_PLUGINS[op]}; it is not installed"
    return suggest(str(op), set(LAYERS))


_NOT_DEFAULTS = {"name", "op", "input", "inputs", "claims", "when"}     # fields a default cannot give
INIT_KINDS = ("conv", "linear", "batch_norm")
_OUTPUT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _word_message(op: str, key: str, word: str, scope: _Scope) -> tuple[str, str, Location, str]:
    """(message, path, location, hint) for a word where a number belongs."""
    known = sorted(scope.values)
    model = registry().model(op)
    better = model.word_hint(op, key, word) if model is not None else None
    if better is not None:
        return better[0], key, Location(), better[1]
    close = suggest(word, known) if known else ""
    hint = close if close.startswith("did you mean") else (
        f"parameters here: {', '.join(known)}" if known else "define it under 'params:'")
    return f"{key!r} takes a number; {word!r} is not a parameter", key, Location(), hint


class _Located(Exception):
    """A problem found while substituting a value, already located (at the table cell)."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


class _Stop(Exception):
    """Expansion stopped at a bound; the diagnostic says which."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


@dataclass
class _Scope:
    """Names visible while expanding one list of layers (the top level or one block instance)."""

    prefix: str                              # "" or "inception_3a/"
    values: dict[str, Any]                   # params (+ block args) for expressions
    value_src: dict[str, tuple[Location, str]]  # where each arg came from (cell location, path)
    block_input: str | None = None           # full name of the block's input (in blocks)
    local: dict[str, str] = field(default_factory=dict)  # local name -> full name of its output
    local_loc: dict[str, Location] = field(default_factory=dict)
    stack: tuple[str, ...] = ()              # blocks being expanded (for recursion)
    group: str | None = None
    row: str | None = None
    args: frozenset[str] = frozenset()       # the block's argument names (table cells)
    failed: set[str] = field(default_factory=set)  # local names whose definition was an error


@dataclass
class _Ref:
    """A reference waiting to be resolved once every name is known (forward references work)."""

    layer: int | None            # index of the layer that reads it; None: a block instance's input
    name: str                    # as written, or the previous layer's full name when path is None
    scope: _Scope
    loc: Location
    path: str | None             # logical path for messages; None: `name` is already a full name
    placeholder: str | None = None   # for a block instance's input: the "@instance" name it defines


class Resolver:
    def __init__(self, doc: YDict, file: str):
        self.doc = doc
        self.file = file
        self.errors: list[Diagnostic] = []
        self.layers: list[Layer] = []
        self.instances: dict[str, Instance] = {}
        self.rows: list[str] = []
        self.pending: list[_Ref] = []
        self.model: Document | None = None
        self.used: set[str] = set()              # names that expressions mention
        self.failed_params: set[str] = set()     # parameters whose own value was an error
        self.index: dict[str, int] = {}           # layer name -> its index in self.layers
        self.layer_refs: dict[int, list[_Ref]] = {}   # the references each layer reads
        self.input_refs: dict[str, _Ref] = {}     # "@instance" -> the reference of its input
        self.shapes: dict[str, Any] = {}          # output shapes computed for conditions
        self.refused: list[Diagnostic] = []       # layers whose op refused their input's shape there
        self.position = 0                         # i of the next top-level block instance
        self.count = 0                            # N: the top-level block instances

    # ------------------------------------------------------------------ driver
    def run(self) -> Spec:
        try:
            self.model = Document.model_validate(self.doc)
        except ValidationError as exc:
            raise SpecError(pydantic_errors(exc, self.doc, "")) from None
        variant = choose_variant(self.doc, self.errors, self.failed_params)
        if self.model.variants is not None:
            self.used.add(self.model.variants.by)
        values = evaluate_params(self.doc, self.errors, self.used, self.failed_params, seed=variant)
        rows = set((self.doc.get("variants") or {}).get("rows") or {})
        params = {k: v for k, v in values.items() if k not in rows}
        self._check_defaults()
        self.input = self._input(values)
        sources = {name: (locate(self.doc, ("variants", "rows", name)), f"variants.rows.{name}") for name in rows}
        sources.update({name: (locate(self.doc, ("params", name)), f"params.{name}") for name in params})
        top = _Scope("", values, sources)
        self.count = self._count_instances(self.doc["layers"], top)
        try:
            self._items(self.doc["layers"], ("layers",), top, default_input=NET_INPUT, top_level=True)
        except _Stop as stop:
            raise SpecError([*_dedupe(self.errors)[:20], stop.diagnostic]) from None
        self._resolve_refs()
        outputs = self._outputs(top)
        network_claims = self._network_claims(values)
        if not self.errors:
            used = self.used | (mentioned_in_blocks(self.doc) if variant else set())
            self.errors += unused_params(self.doc, params, used, self.file)
        if self.errors:
            raise SpecError(_dedupe(self.errors))
        self._drop_stale_params(params, used)
        m = self.model
        return Spec(
            name=m.name, description=m.description, paper=m.paper, input=self.input,
            params=params, layers=self.layers, instances=self.instances, rows=self.rows,
            outputs=outputs, loss=m.loss, init=m.init, claim_units=m.claim_units, torch=m.torch,
            file=self.file, train=m.train, data=m.data, document=self.doc,
            stages=[Choice(v, locate(self.doc, ("stages", i))) for i, v in enumerate(m.stages)],
            features=[Choice(v, locate(self.doc, ("features", i))) for i, v in enumerate(m.features)],
            claims=network_claims, claims_locs={k: locate(self.doc, ("claims", k)) for k in ("params", "ops")},
            claims_input=tuple(m.claims.input) if network_claims is not None and m.claims.input else None)

    def _drop_stale_params(self, params: dict[str, Any], used: set[str]) -> None:
        """A parameter a parent spec declares whose readers this spec deleted (MobileNetV3's ``dropout`` under
        LR-ASPP's head) leaves the resolved document, which checkpoints and run folders save: loaded again on
        its own, the spec would otherwise hold a parameter nothing reads."""
        table = self.doc.get("params")
        if not isinstance(table, dict):
            return
        stale = [n for n in params if n not in used and n in table]
        if stale:
            mentioned = mentioned_outside_params(self.doc)
            for name in stale:
                if name not in mentioned:
                    del table[name]
                    del params[name]

    def _network_claims(self, values: dict[str, Any]) -> Claims | None:
        """The whole network's claims, for the chosen variant: a list holds one per column."""
        raw = self.doc.get("claims")
        if not raw or self.model.claims is None:
            return None
        variants = self.model.variants
        chosen = YDict(loc=locate(self.doc, ("claims",)))
        for key in ("params", "ops"):
            value = raw.get(key)
            where = locate(self.doc, ("claims", key))
            if not isinstance(value, list):
                if value is not None:
                    chosen.put(key, value, where)
                continue
            if variants is None:
                self.errors.append(error(f"claims.{key} is a list, but the spec has no variants", f"claims.{key}",
                                         where, hint="give one quantity (28M), or a 'variants:' table whose "
                                                     "columns the list follows"))
                continue
            if len(value) != len(variants.columns):
                self.errors.append(error(f"claims.{key} has {len(value)} values but the variants have "
                                         f"{len(variants.columns)} columns ({', '.join(map(str, variants.columns))})",
                                         f"claims.{key}", where, hint="one value per column, in order"))
                continue
            column = values.get(variants.by)
            if column not in variants.columns:
                continue                  # choose_variant has said why
            index = list(variants.columns).index(column)
            if value[index] is not None:          # null: the paper prints none for this column
                chosen.put(key, value[index], locate(self.doc, ("claims", key, index)))
        if not chosen:
            return None
        try:
            return Claims.model_validate(chosen)
        except ValidationError as exc:
            self.errors += pydantic_errors(exc, chosen, "claims", fallback=chosen.loc)
            return None

    def _input(self, values: dict[str, Any]) -> tuple[int, ...]:
        """``input:``, its expressions evaluated (EfficientNet's resolution comes from its variant's column)."""
        shape = []
        for i, value in enumerate(self.model.input):
            if isinstance(value, str):
                try:
                    value = expr.evaluate(value, values, self.used)
                except expr.ExprError as exc:
                    self.errors.append(error(str(exc), f"input.{i}", locate(self.doc, ("input", i))))
                    value = 1
                else:
                    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
                        self.errors.append(error(f"input size must be a whole number from 1 to {MAX_DIM}, "
                                                 f"got {value!r}", f"input.{i}", locate(self.doc, ("input", i)),
                                                 hint="round it: int(...)"))
                        value = 1
            shape.append(value)
        return tuple(shape)

    def _check_defaults(self) -> None:
        """``defaults:`` names ops and their fields, ``init:`` op kinds: a typo is an error, not
        a silently ignored entry."""
        for op, fields in (self.doc.get("defaults") or {}).items():
            if op not in LAYERS:
                self.errors.append(error(f"unknown op {op!r}", f"defaults.{op}",
                                         locate(self.doc, ("defaults", op), key=True),
                                         hint=unknown_op_hint(op)))
                continue
            allowed = set(LAYERS[op].model.model_fields) - _NOT_DEFAULTS
            for key in fields or {}:
                if key not in allowed:
                    self.errors.append(error(f"{op} has no field {key!r}", f"defaults.{op}.{key}",
                                             locate(self.doc, ("defaults", op, key), key=True),
                                             hint=suggest(key, allowed)))
        for kind in self.doc.get("init") or {}:
            if kind not in INIT_KINDS:
                self.errors.append(error(f"init applies to {', '.join(INIT_KINDS)}, not {kind!r}", f"init.{kind}",
                                         locate(self.doc, ("init", kind), key=True),
                                         hint=suggest(kind, set(INIT_KINDS))))

    # ------------------------------------------------------------------ lists of layers
    def _items(self, items: list, path: tuple, scope: _Scope, default_input: str, top_level: bool) -> str:
        """Expand ``items``; return the full name of the last one's output."""
        previous = default_input
        for i, item in enumerate(items):
            ipath = path + (i,)
            where = items.where(i) if isinstance(items, YList) else Location(self.file)
            if len(self.layers) > MAX_LAYERS:
                raise _Stop(error(f"the spec expands to more than {MAX_LAYERS:,} layers", _logical(ipath), where,
                                  hint="blocks that use blocks multiply; is a block used more often than meant?"))
            if len(self.errors) > 500:
                raise _Stop(error("stopped after 500 errors", _logical(ipath), where))
            if not isinstance(item, dict):
                self.errors.append(error("a layer is a mapping with 'op', 'use' or 'table'",
                                         _logical(ipath), where, value=item))
                continue
            if "table" in item:
                previous = self._table(item, ipath, scope, previous, top_level)
            elif "use" in item:
                try:
                    use = BlockUse.model_validate(item)
                except ValidationError as exc:
                    self.errors += pydantic_errors(exc, item, _logical(ipath))
                    continue
                previous = self._use(use, item, ipath, scope, previous, top_level)
            elif "op" in item:
                previous = self._layer(item, ipath, scope, previous, top_level)
            else:
                self.errors.append(error("a layer needs 'op' (a layer), 'use' (a block) or 'table'",
                                         _logical(ipath), where,
                                         hint=f"keys given: {', '.join(map(str, item)) or 'none'}"))
        return previous

    def _claim_name(self, name: str, scope: _Scope, where: Location, path: str) -> str | None:
        if scope.block_input is not None and name == BLOCK_INPUT:
            self.errors.append(error(f"{BLOCK_INPUT!r} names the block's input; a layer cannot use it",
                                     path, where))
            return None
        if scope.block_input is None and name == NET_INPUT:
            self.errors.append(error(f"{NET_INPUT!r} names the network's input; a layer cannot use it",
                                     path, where))
            return None
        if "/" in name:
            self.errors.append(error(f"layer name {name!r} may not contain '/'", path, where))
            return None
        if name in scope.local:
            first = scope.local_loc[name]
            self.errors.append(error(f"duplicate layer name {name!r} (first defined at line {first.line})",
                                     path, where, value=name, hint="every layer needs its own name"))
            return None
        return scope.prefix + name

    # ------------------------------------------------------------------ one layer
    def _layer(self, item: dict, ipath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        before = len(self.errors)
        out = self._define_layer(item, ipath, scope, previous, top_level)
        if len(self.errors) > before and isinstance(item.get("name"), str):
            scope.failed.add(item["name"])
        return out

    def _define_layer(self, item: dict, ipath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        where = getattr(item, "loc", Location(self.file))
        op = item.get("op")
        name = item.get("name")
        logical = f"{_logical(ipath[:-1])}.{name}" if name else _logical(ipath)
        if scope.prefix:
            logical = f"{scope.prefix}{name}" if name else logical
        model = registry().model(op) if isinstance(op, str) else None
        if model is None:
            self.errors.append(error(f"unknown op {op!r}", f"{logical}.op", locate(item, ("op",)),
                                     value=op, hint=unknown_op_hint(op)))
            return previous
        if item.get("when") is not None:
            holds = self._condition(item["when"], scope, locate(item, ("when",)), f"{logical}.when")
            if holds is None:
                return previous
            if not holds:
                refs = item.get("inputs") if isinstance(item.get("inputs"), list) else item.get("input")
                refs = [refs] if isinstance(refs, str) else refs
                if not isinstance(name, str) or (refs is not None and not (
                        isinstance(refs, list) and all(isinstance(r, str) for r in refs))):
                    holds = True                # the layer's own validation below says what is wrong
                else:
                    return self._skip(name, refs or None, scope, previous, where, logical)
        defaults: dict[str, Any] = dict((self.doc.get("defaults") or {}).get(op) or {})
        data: dict[str, Any] = {}
        field_locs: dict[str, Location] = {k: locate(self.doc, ("defaults", op, k)) for k in defaults}
        field_paths: dict[str, str] = {}
        # the defaults first, read in the layer's scope (they may name parameters: eps: bn_eps), then its own fields
        for key, value in [*((k, v) for k, v in defaults.items() if k not in item), *item.items()]:
            if key in item:
                field_locs[key] = locate(item, (key,))
            if key == "when":
                continue
            if key in _RAW_FIELDS or key not in model.model_fields:
                data[key] = self._claim_values(plain(value), scope) if key == "claims" else plain(value)
                continue
            try:
                data[key], src = self._substitute(value, key, op, scope)
            except _Located as exc:
                d = exc.diagnostic
                if not d.location.line:       # located at the field itself
                    d = error(d.message, f"{logical}.{key}", locate(item, (key,)), hint=d.hint, value=d.value)
                self.errors.append(d)
                return previous
            except expr.ExprError as exc:
                if exc.unknown in self.failed_params:
                    return previous          # the parameter's own error says it once
                hint = None
                if "never closed" in str(exc) or "unmatched" in str(exc):
                    hint = "inside { } or [ ] YAML splits at commas: quote the expression"
                self.errors.append(error(str(exc), f"{logical}.{key}", locate(item, (key,)), value=value,
                                         hint=hint))
                return previous
            if src is not None:
                field_locs[key], field_paths[key] = src
        for key in data:
            field_locs.setdefault(key, where)
        try:
            spec = model.model_validate(data)
        except ValidationError as exc:
            for d in pydantic_errors(exc, item, logical):
                key = d.path[len(logical) + 1:].split(".")[0] if d.path.startswith(logical + ".") else ""
                if key in field_paths:
                    d = error(d.message, field_paths[key], field_locs[key], value=d.value,
                              hint=f"used as {key!r} of {logical}")
                elif key in field_locs and d.location == getattr(item, "loc", None):
                    d = d.at(field_locs[key])
                self.errors.append(d)
            return previous
        full = self._claim_name(spec.name, scope, where, logical)
        if full is None:
            return previous
        scope.local[spec.name] = full
        scope.local_loc[spec.name] = where
        refs = spec.input_names()
        index = len(self.layers)
        row = scope.row if scope.row is not None else full
        self.layers.append(Layer(full, spec, (), scope.group, row, where, field_locs))
        self.index[full] = index
        if top_level and scope.row is None:
            self.rows.append(full)
        start = len(self.pending)
        if refs is None:
            self.pending.append(_Ref(index, previous, scope, where, None))
        else:
            key = "inputs" if spec.n_inputs == "many" else "input"
            for k, ref in enumerate(refs):
                if ref is None:         # an op's further input beside the default one (interpolate's size_of)
                    self.pending.append(_Ref(index, previous, scope, where, None))
                    continue
                loc = locate(item, (key, k)) if key == "inputs" else locate(item, (key,))
                self.pending.append(_Ref(index, ref, scope, loc, f"{logical}.{key}"))
        self.layer_refs[index] = self.pending[start:]
        return full

    def _substitute(self, value: Any, key: str, op: str, scope: _Scope) -> tuple[Any, Any]:
        """Evaluate expressions in a field value; also say where a bare argument came from."""
        if isinstance(value, list):
            return [self._substitute(v, key, op, scope)[0] for v in value], None
        if isinstance(value, dict) and isinstance(value.get("kind"), str) and value["kind"] in NUMERIC:
            # a nested op's settings (a conv's norm: {kind: batch_norm, eps: bn_eps}): read like its fields
            kind = value["kind"]
            return {k: v if k == "kind" else self._substitute(v, k, kind, scope)[0] for k, v in value.items()}, None
        if not isinstance(value, str):
            return plain(value), None
        text = value.strip()
        values = self._with_input_shape(text, scope)
        if key not in NUMERIC.get(op, set()) and text not in values:
            return value, None              # not a number field: pydantic judges the string
        words = STRINGS.get(op, {}).get(key, False)
        if words is not False:
            if words is None or text in words:
                return value, None
            try:
                if not expr.names(text) <= set(values):
                    return value, None        # a word, left for pydantic to judge
            except expr.ExprError:
                return value, None
        if _WORD.fullmatch(text) and expr._mangle(text) == text and text not in values:
            if text in self.failed_params:      # its own error says it once
                raise expr.ExprError(f"parameter {text!r} has an error", unknown=text)
            raise _Located(error(*_word_message(op, key, text, scope), value=text))
        used: set[str] = set()
        try:
            result = expr.evaluate(text, values, used)
        except expr.ExprError as exc:
            cells = [n for n in sorted(used & scope.args) if n in scope.value_src]
            if exc.unknown is None and cells:    # the value came from a table cell or argument: point there
                loc, path = scope.value_src[cells[0]]
                raise _Located(error(str(exc), path, loc, value=scope.values.get(cells[0]),
                                     hint=f"{cells[0]} = {scope.values.get(cells[0])!r} is used in {key!r}: {text}")) from None
            raise
        finally:
            self.used |= used
        if key in INTEGER.get(op, set()):
            for name in sorted(used & scope.args):
                arg = scope.values.get(name)
                if isinstance(arg, float) and not arg.is_integer():
                    loc, path = scope.value_src.get(name, (None, name))
                    raise _Located(error(f"{arg!r} is not a whole number", path, loc or Location(self.file),
                                         value=arg, hint=f"it is used as {key!r}, which counts whole things"))
        return result, scope.value_src.get(text)

    def _with_input_shape(self, text: str, scope: _Scope) -> dict[str, Any]:
        """The values a field's expression reads: with the block input's in_channels, in_height and
        in_width where it names them (MobileNetV2's expansion: ``out: "in_channels * t"``)."""
        try:
            wanted = (expr.names(text) & set(SHAPE_NAMES)) - set(scope.values)
        except expr.ExprError:
            return scope.values
        if not wanted or scope.block_input is None:
            return scope.values
        shape = self._shape(scope.block_input)
        if shape is None and self.refused:
            raise _Located(self.refused[0])       # the cause: a layer above refused its input's shape
        if shape is None or len(shape) != 3:
            raise _Located(error("cannot compute the value: the shape of the block's input is not known here",
                                 value=text,
                                 hint="the layers before the block must be valid, read only layers above "
                                      "them, and give an image (C, H, W)"))
        return {**scope.values, **dict(zip(SHAPE_NAMES, shape))}

    # ------------------------------------------------------------------ blocks
    def _instance(self, name: str, block_name: str, args: dict, args_node: Any, input_ref: str | None,
                  claims: Any, item: Any, ipath: tuple, scope: _Scope, previous: str, top_level: bool,
                  from_table: bool, arg_src: dict[str, tuple[Location, str]] | None = None) -> str:
        before = len(self.errors)
        out = self._define_instance(name, block_name, args, args_node, input_ref, claims, item, ipath, scope,
                                    previous, top_level, from_table, arg_src)
        if len(self.errors) > before and name not in scope.local:
            scope.failed.add(name)
        return out

    def _claim_values(self, claims: Any, scope: _Scope) -> Any:
        """``claims`` with each value that names a parameter replaced by its value: a table of variants
        gives each column's claims (ShuffleNetV2's ``output: stage2_out``)."""
        if not isinstance(claims, dict):
            return claims
        out = YDict(loc=claims.loc) if isinstance(claims, YDict) else {}   # a copy: the document stays
        for key, value in claims.items():
            named = scope.values.get(value) if isinstance(value, str) else None
            if isinstance(named, (str, int)) and not isinstance(named, bool):
                self.used.add(value)
                value = named
            if isinstance(out, YDict):
                out.put(key, value, claims.where(key), claims.where(key, key_only=True))
            else:
                out[key] = value
        return out

    def _claims(self, claims: Any, logical: str, where: Location, scope: _Scope | None = None) -> Claims | None:
        """A row's claims, validated (errors located at the claim, or at the row)."""
        if not claims:
            return None
        if scope is not None:
            claims = self._claim_values(claims, scope)
        try:
            return Claims.model_validate(claims)
        except ValidationError as exc:
            self.errors += pydantic_errors(exc, claims, f"{logical}.claims", fallback=where)
            return None

    def _define_instance(self, name: str, block_name: str, args: dict, args_node: Any, input_ref: str | None,
                         claims: Any, item: Any, ipath: tuple, scope: _Scope, previous: str, top_level: bool,
                         from_table: bool, arg_src: dict[str, tuple[Location, str]] | None = None) -> str:
        where = getattr(item, "loc", Location(self.file))
        logical = f"{scope.prefix}{name}" if scope.prefix else f"{_logical(ipath[:-1])}.{name}"
        blocks: dict[str, BlockDef] = self.model.blocks
        if len(self.instances) > MAX_LAYERS:     # blocks whose layers are all skipped add no layers
            raise _Stop(error(f"the spec expands to more than {MAX_LAYERS:,} block instances", logical, where,
                              hint="repeats multiply; is a row repeated more often than meant?"))
        block_name = self._block_name(block_name, scope)
        if block_name not in blocks:
            self.errors.append(error(f"unknown block {block_name!r}", f"{logical}.use",
                                     locate(item, ("use",)) if isinstance(item, dict) else where,
                                     value=block_name, hint=suggest(block_name, set(blocks)) or
                                     "define it under 'blocks:'"))
            return previous
        if len(scope.stack) >= MAX_BLOCK_NESTING:
            self.errors.append(error(f"blocks are nested more than {MAX_BLOCK_NESTING} deep", logical, where))
            return previous
        if block_name in scope.stack:
            chain = " -> ".join((*scope.stack, block_name))
            self.errors.append(error(f"block {block_name!r} uses itself ({chain})", logical, where,
                                     hint="blocks cannot be recursive"))
            return previous
        block = blocks[block_name]
        declared = block.arg_names()
        values = dict(block.arg_defaults())
        arg_src = dict(arg_src or {})
        ok = True
        for arg, value in args.items():
            aloc = arg_src.get(arg, (locate(args_node, (arg,), key=True), f"{logical}.{arg}"))
            if arg not in declared:
                self.errors.append(error(f"block {block_name!r} has no argument {arg!r}", aloc[1], aloc[0],
                                         value=arg, hint=suggest(arg, set(declared))))
                ok = False
                continue
            if isinstance(value, str):
                try:       # inside a block, an argument may read that block's input (RegNetY's SE width)
                    value = expr.evaluate(value, self._with_input_shape(value, scope), self.used)
                except _Located as exc:
                    d = exc.diagnostic
                    self.errors.append(error(d.message, aloc[1], aloc[0], hint=d.hint, value=d.value))
                    ok = False
                    continue
                except expr.ExprError as exc:
                    if exc.unknown in SHAPE_NAMES and scope.block_input is None and exc.unknown not in scope.values:
                        self.errors.append(error(f"{exc.unknown!r} is the shape of a block's input; at the top "
                                                 "level there is none", aloc[1], aloc[0], value=value,
                                                 hint="a block used inside a block may read its input's shape"))
                    elif exc.unknown not in self.failed_params:
                        self.errors.append(error(str(exc), aloc[1], aloc[0], value=value))
                    ok = False
                    continue
            values[arg] = plain(value)
            arg_src[arg] = aloc
        missing = [a for a in declared if a not in values and a not in args]   # a failed value: said above
        if missing:
            self.errors.append(error(f"block {block_name!r} needs argument(s) {', '.join(missing)}",
                                     logical, where, hint=f"arguments: {', '.join(declared)}"))
            ok = False
        full = self._claim_name(name, scope, where, logical)
        if not ok or full is None:
            return previous
        claim_model = self._claims(claims, logical, where, scope)
        block_input = f"@{full}"              # placeholder, resolved below
        inherited = {k: v for k, v in scope.value_src.items() if k not in values}   # params used bare inside
        position: dict[str, int] = {}
        if scope.block_input is None:         # a top-level instance: its position in the network
            position = {"i": self.position, "N": max(self.count, self.position + 1)}
            self.position += 1
        inner = _Scope(full + "/", {**position, **scope.values, **values},
                       {**inherited, **{a: (loc, path) for a, (loc, path) in arg_src.items()}},
                       block_input=block_input, stack=(*scope.stack, block_name), group=full,
                       row=scope.row if scope.row is not None else full, args=frozenset(values))
        # the block's own input reference is resolved in the outer scope (known before its layers
        # expand: their conditions may ask for its shape)
        iloc = locate(item, ("input",)) if isinstance(item, dict) and "input" in item else where
        if input_ref is None:
            self.pending.append(_Ref(None, previous, scope, iloc, None, block_input))
        else:
            self.pending.append(_Ref(None, input_ref, scope, iloc, f"{logical}.input", block_input))
        self.input_refs[block_input] = self.pending[-1]
        raw_layers = self.doc["blocks"][block_name]["layers"]      # keeps source locations
        last = self._items(raw_layers, ("blocks", block_name, "layers"), inner,
                           default_input=block_input, top_level=False)
        output = last
        if block.output is not None:
            if block.output not in inner.local:
                self.errors.append(error(f"block {block_name!r} has no layer {block.output!r} to return",
                                         f"blocks.{block_name}.output",
                                         locate(self.doc, ("blocks", block_name, "output")),
                                         hint=suggest(block.output, set(inner.local))))
            else:
                output = inner.local[block.output]
        scope.local[name] = output
        scope.local_loc[name] = where
        self.instances[full] = Instance(full, block_name, values, output, claim_model, where,
                                        scope.group, from_table)
        if top_level and scope.row is None:
            self.rows.append(full)
        return output

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
            if table.repeat in cells:
                previous = self._repeated(name, table.use, args, None, None, claims_node or None, row, rpath,
                                          scope, previous, top_level, True, cell_src, cells[table.repeat],
                                          cell_src[table.repeat], table.repeat)
                continue
            if not table.repeat.isidentifier():       # an expression over the row's counted columns
                given = {c: cells[c] for c in counted}
                previous = self._repeated(name, table.use, args, None, None, claims_node or None, row, rpath,
                                          scope, previous, top_level, True, cell_src, table.repeat,
                                          (locate(raw, ("repeat",)), f"{row_path}.repeat"), REPEAT, given)
                continue
            previous = self._instance(name, table.use, args, None, None, claims_node or None, row, rpath,
                                      scope, previous, top_level, from_table=True, arg_src=cell_src)
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
        if use.repeat is not None:
            count_src = (locate(item, ("repeat",)), f"{_logical(ipath)}.repeat")
            return self._repeated(use.name, use.use, args, item.get("args"), use.input, item.get("claims"), item,
                                  ipath, scope, previous, top_level, False, None, use.repeat, count_src)
        return self._instance(use.name, use.use, args, item.get("args"), use.input, item.get("claims"), item,
                              ipath, scope, previous, top_level, from_table=False)

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

    def _repeated(self, name: str, block_name: str, args: dict, args_node: Any, input_ref: str | None,
                  claims: Any, item: Any, ipath: tuple, scope: _Scope, previous: str, top_level: bool,
                  from_table: bool, arg_src: dict | None, count_value: Any, count_src: tuple[Location, str],
                  count_name: str = REPEAT, count_cells: dict | None = None) -> str:
        """A row repeated ``count`` times (the paper's ``x3``): a group ``name`` holding the instances
        ``name/0`` ... in a chain; the first takes the row's arguments and input, the others stride 1."""
        where = getattr(item, "loc", Location(self.file))
        logical = f"{scope.prefix}{name}" if scope.prefix else f"{_logical(ipath[:-1])}.{name}"
        count = self._repeat_count(count_value, scope, count_src, cells=count_cells)
        block = self._block_name(block_name, scope)
        full = self._claim_name(name, scope, where, logical)
        if count is None or full is None:
            scope.failed.add(name)
            return previous
        claim_model = self._claims(claims, logical, where, scope)
        group_input = f"@{full}"
        iloc = locate(item, ("input",)) if isinstance(item, dict) and "input" in item else where
        ref = (_Ref(None, previous, scope, iloc, None, group_input) if input_ref is None else
               _Ref(None, input_ref, scope, iloc, f"{logical}.input", group_input))
        self.pending.append(ref)
        self.input_refs[group_input] = ref
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
            kargs = dict(args) if k == 0 or not has_stride else {**args, stride: 1}
            last = self._instance(str(k), block_name, kargs, args_node, None, None, item, ipath, inner, last,
                                  top_level, from_table, arg_src)
            if len(self.errors) > before:
                break                     # the same mistake in every repeat says it once
        values = {**{k: plain(v) for k, v in args.items()}, **{k: plain(v) for k, v in (count_cells or {}).items()},
                  count_name: count}
        self.instances[full] = Instance(full, block, values, last, claim_model, where, scope.group, from_table)
        scope.local[name] = last
        scope.local_loc[name] = where
        if top_level and scope.row is None:
            self.rows.append(full)
        return last

    def _block_name(self, name: str, scope: _Scope) -> str:
        """``use:`` names a block, or a parameter (a variant row) whose value names one."""
        if name not in self.model.blocks and isinstance(scope.values.get(name), str):
            self.used.add(name)
            return scope.values[name]
        return name

    def _skip(self, name: str, inputs: list[str] | None, scope: _Scope, previous: str, where: Location,
              logical: str) -> str:
        """A layer (or block use) whose condition is false does not exist: what reads it reads its
        input (its first, for add and concat) instead."""
        if self._claim_name(name, scope, where, logical) is None:
            return previous
        target = previous
        if inputs:
            target = self._peek(inputs[0], scope)
            if target is None:
                self.errors.append(error(f"{name!r} reads {inputs[0]!r}, which is not defined before it; a layer "
                                         "with 'when' reads only layers above it", logical, where,
                                         value=inputs[0], hint="when the condition is false, whatever reads "
                                         f"{name!r} reads {inputs[0]!r} instead: it must be known by then"))
                scope.failed.add(name)
                return previous
        scope.local[name] = target
        scope.local_loc[name] = where
        return previous

    def _condition(self, text: Any, scope: _Scope, where: Location, path: str) -> bool | None:
        """The value of a ``when`` condition, or None after reporting why it has none."""
        if isinstance(text, bool):
            return text
        if not isinstance(text, str):
            self.errors.append(error(f"'when' takes a condition such as \"stride == 1\", not {text!r}", path, where,
                                     value=text))
            return None
        values = scope.values
        try:
            mentioned = expr.names(text)
            wanted = mentioned & set(SHAPE_NAMES)
        except expr.ExprError as exc:
            self.errors.append(error(str(exc), path, where, value=text))
            return None
        wanted -= set(values)
        if wanted:
            if scope.block_input is None:
                self.errors.append(error(f"{sorted(wanted)[0]!r} is the shape of a block's input; at the top level "
                                         "there is none", path, where, value=text,
                                         hint="conditions on the input's shape belong in a block's layers"))
                return None
            shape = self._shape(scope.block_input)
            if shape is None and self.refused:
                self.errors.append(self.refused[0])     # the cause: a layer above refused its input's shape
                return None
            if shape is None or len(shape) != 3:
                self.errors.append(error("cannot decide the condition: the shape of the block's input is not "
                                         "known here", path, where, value=text,
                                         hint="the layers before the block must be valid, read only layers "
                                              "above them, and give an image (C, H, W)"))
                return None
            values = {**values, **dict(zip(SHAPE_NAMES, shape))}
        words = {w: w == "true" for w in ("true", "false") if w in mentioned}    # YAML's spelling, quoted
        values = {**words, **values}
        try:
            result = expr.evaluate(text, values, self.used)
        except expr.ExprError as exc:
            if exc.unknown in self.failed_params:
                return None
            hint = None
            if exc.unknown is not None:
                choices = set(values) | set(SHAPE_NAMES if scope.block_input is not None else ())
                close = suggest(exc.unknown, choices)
                hint = close if close.startswith("did you mean") else (
                    "a condition reads the block's arguments, the parameters, i and N (the block's position) "
                    "and the block's input's " + ", ".join(SHAPE_NAMES))
            self.errors.append(error(str(exc), path, where, value=text, hint=hint))
            return None
        if not isinstance(result, bool):
            self.errors.append(error(f"'when' must be true or false; {text!r} gives {result!r}", path, where,
                                     value=text, hint="compare, e.g. \"stride != 1 or in_channels != out\""))
            return None
        return result

    # ------------------------------------------------------------------ shapes, for conditions
    def _peek(self, ref: str, scope: _Scope) -> str | None:
        """The full name ``ref`` stands for now, without reporting anything (None: not known yet)."""
        if ref.startswith("@"):
            return ref
        if scope.block_input is not None and ref == BLOCK_INPUT:
            return scope.block_input
        if scope.block_input is None and ref == NET_INPUT:
            return NET_INPUT
        if ref in scope.local:
            return scope.local[ref]
        if scope.block_input is None:
            if ref in self.index:
                return ref
            inst = self.instances.get(ref)
            if inst is not None:
                return inst.output
        return None

    def _peek_ref(self, ref: _Ref | None) -> str | None:
        if ref is None:
            return None
        return ref.name if ref.path is None else self._peek(ref.name, ref.scope)

    def _shape(self, name: str) -> Any:
        """The output shape of ``name`` (a layer, a block's input or the network's input) from the
        layers defined so far; None where it cannot be known (an error elsewhere, a later layer)."""
        cache, stack, visiting = self.shapes, [name], set()
        while stack:
            n = stack[-1]
            if n in cache:
                stack.pop()
                continue
            visiting.add(n)
            if n == NET_INPUT:
                cache[n] = self.input
                continue
            if n.startswith("@"):
                deps = [self._peek_ref(self.input_refs.get(n))]
            elif n in self.index:
                deps = [self._peek_ref(r) for r in self.layer_refs.get(self.index[n], [])]
                deps = deps or [None]
            else:
                deps = [None]
            if any(d is None or (d in visiting and d not in cache) for d in deps):
                cache[n] = None
                continue
            missing = [d for d in deps if d not in cache]
            if missing:
                stack.extend(missing)
                continue
            shapes = [cache[d] for d in deps]
            if any(sh is None for sh in shapes):
                cache[n] = None
            elif n.startswith("@"):
                cache[n] = shapes[0]
            else:
                layer = self.layers[self.index[n]]
                try:
                    cache[n] = tuple(layer_shape(layer.spec, shapes))
                except ValueError as exc:       # the op refuses these shapes: said at the layer
                    cache[n] = None
                    self.refused.append(error(str(exc), layer.name, layer.loc))
                except (TypeError, KeyError):
                    cache[n] = None
        return cache[name]

    # ------------------------------------------------------------------ references
    def _resolve_refs(self) -> None:
        block_inputs: dict[str, str] = {}
        # block inputs first: their targets may be layers of the outer scope
        for ref in self.pending:
            if ref.placeholder is not None:
                target = self._target(ref)
                if target is not None:
                    block_inputs[ref.placeholder] = target

        def follow(name: str) -> str | None:
            seen = set()
            while name.startswith("@"):
                if name in seen or name not in block_inputs:
                    return None
                seen.add(name)
                name = block_inputs[name]
            return name

        inputs: dict[int, list[str | None]] = {}
        for ref in self.pending:
            if ref.layer is None:
                continue
            target = self._target(ref)
            if target is not None and target.startswith("@"):
                target = follow(target)
            inputs.setdefault(ref.layer, []).append(target)
        for index, names in inputs.items():
            if any(n is None for n in names):
                continue
            layer = self.layers[index]
            object.__setattr__(layer, "inputs", tuple(names))

    def _target(self, ref: _Ref) -> str | None:
        """The full name a reference resolves to (the previous layer's needs no lookup)."""
        return ref.name if ref.path is None else self._lookup(ref.name, ref.scope, ref.loc, ref.path)

    def _lookup(self, ref: str, scope: _Scope, loc: Location, path: str) -> str | None:
        """The full name ``ref`` stands for once every name is known, or a located error."""
        found = self._peek(ref, scope)
        if found is not None:
            return found
        if ref in scope.failed:
            return None                 # its definition's own error says it: no follow-on error here
        choices = set(scope.local) | {BLOCK_INPUT if scope.block_input else NET_INPUT}
        self.errors.append(error(f"reference to undefined layer {ref!r}", path, loc, value=ref,
                                 hint=suggest(ref, choices)))
        return None

    # ------------------------------------------------------------------ outputs
    def _outputs(self, top: _Scope) -> dict[str, Output]:
        m = self.model
        outs: dict[str, Output] = {}
        if not self.layers:
            return outs
        if not m.outputs:
            return {"main": Output("main", self.layers[-1].name, m.loss, 1.0, False, self.doc.loc)}
        for name, out in m.outputs.items():
            if not _OUTPUT_NAME.fullmatch(name) or keyword.iskeyword(name) or len(name) > MAX_NAME_CHARS:
                self.errors.append(error(f"output name {name[:60]!r} is not a Python identifier", f"outputs.{name}",
                                         locate(self.doc, ("outputs", name), key=True), value=name,
                                         hint="outputs are fields of the model's named tuple: use letters, "
                                              "digits and _, starting with a letter"))
                continue
            loc = locate(self.doc, ("outputs", name, "layer"))
            target = self._lookup(out.layer, top, loc, f"outputs.{name}.layer")
            if target is None:
                continue
            outs[name] = Output(name, target, out.loss or m.loss, out.weight, out.training_only, loc)
        if outs and all(o.training_only for o in outs.values()):
            self.errors.append(error("every output is training_only: nothing is left for inference",
                                     "outputs", locate(self.doc, ("outputs",)),
                                     hint="mark the main output training_only: false"))
        return outs


def _dedupe(errors: list[Diagnostic]) -> list[Diagnostic]:
    """A mistake inside a block shows once, not once per use of the block."""
    out, seen = [], set()
    for d in errors:
        key = (d.location, d.message) if d.location.line else (d.path, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _logical(path: tuple) -> str:
    """A readable path: ``('layers', 3)`` -> ``layers[3]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


def resolve(doc: YDict, file: str) -> Spec:
    return Resolver(doc, file).run()
