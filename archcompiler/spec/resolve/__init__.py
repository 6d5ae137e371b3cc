"""From a merged document to a :class:`~.resolved.Spec`: evaluate parameters, expand blocks and
table rows, substitute expressions and defaults, validate every concrete layer, and resolve
references by name.  All problems are collected and raised together as one :class:`SpecError`.

The parts: :mod:`.scope` (what they share), :mod:`.tables` (tables, repeats and block instances),
:mod:`.conditions` (``when:``), :mod:`.references` (names, outputs, claims); layers and the run here.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ...errors import Diagnostic, Location, SpecError, error
from ...ops import LAYERS, registry
from .. import expr
from ..base import suggest
from ..diagnose import pydantic_errors
from ..document import BlockUse, Document
from ..fields import INTEGER, NUMERIC, STRINGS
from ..layers import Claims
from ..limits import MAX_DIM, MAX_LAYERS
from ..params import evaluate_params, unused_params
from ..resolved import Choice, Instance, Layer, Spec
from ..source import YDict, YList, locate, plain
from ..variants import choose_variant, mentioned_in_blocks, mentioned_outside_params
from .conditions import Conditions
from .references import References
from .scope import (
    _NOT_DEFAULTS,
    _RAW_FIELDS,
    _WORD,
    INIT_KINDS,
    NET_INPUT,
    SHAPE_NAMES,
    _dedupe,
    _Located,
    _logical,
    _Ref,
    _Scope,
    _Stop,
    _word_message,
    unknown_op_hint,
)
from .tables import Tables


class Resolver(Tables, Conditions, References):
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

    # ------------------------------------------------------------------ one layer
    def _layer(self, item: dict, ipath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        before = len(self.errors)
        out = self._define_layer(item, ipath, scope, previous, top_level)
        if len(self.errors) > before and isinstance(item.get("name"), str):
            scope.failed.add(item["name"])
        return out

    def _define_layer(self, item: dict, ipath: tuple, scope: _Scope, previous: str, top_level: bool) -> str:
        """One layer entry: its op's fields (the spec's defaults for the op, then its own) evaluated
        and validated, its name claimed, its inputs queued for resolution; returns its full name
        (``previous`` when it fails or its ``when`` is false)."""
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
            skipped = self._when_layer(item, scope, previous, where, logical)
            if skipped is not None:
                return skipped
        fields = self._layer_fields(item, op, model, scope, logical)
        if fields is None:
            return previous
        data, field_locs, field_paths = fields
        for key in data:
            field_locs.setdefault(key, where)
        try:
            spec = model.model_validate(data)
        except ValidationError as exc:
            self._field_errors(exc, item, logical, field_locs, field_paths)
            return previous
        full = self._claim_name(spec.name, scope, where, logical)
        if full is None:
            return previous
        scope.local[spec.name] = full
        scope.local_loc[spec.name] = where
        index = len(self.layers)
        row = scope.row if scope.row is not None else full
        self.layers.append(Layer(full, spec, (), scope.group, row, where, field_locs))
        self.index[full] = index
        if top_level and scope.row is None:
            self.rows.append(full)
        self._layer_inputs(index, spec, item, scope, previous, logical)
        return full

    def _when_layer(self, item: dict, scope: _Scope, previous: str, where: Location, logical: str) -> str | None:
        """A layer's ``when``: None when it holds (the layer is made), else what the layer leaves in
        its place: ``previous`` when the condition fails (said), its input when it is false."""
        holds = self._condition(item["when"], scope, locate(item, ("when",)), f"{logical}.when")
        if holds is None:
            return previous
        if holds:
            return None
        name = item.get("name")
        refs = item.get("inputs") if isinstance(item.get("inputs"), list) else item.get("input")
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(name, str) or (refs is not None and not (
                isinstance(refs, list) and all(isinstance(r, str) for r in refs))):
            return None                 # the layer's own validation says what is wrong
        return self._skip(name, refs or None, scope, previous, where, logical)

    def _layer_fields(self, item: dict, op: str, model: Any, scope: _Scope,
                      logical: str) -> tuple[dict[str, Any], dict[str, Location], dict[str, str]] | None:
        """A layer's field values, each field's place (and, for a value a block argument gave, that
        argument's path); None when a value fails (said once)."""
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
            evaluated = self._field_value(item, key, value, op, scope, logical)
            if evaluated is None:
                return None
            data[key], src = evaluated
            if src is not None:
                field_locs[key], field_paths[key] = src
        return data, field_locs, field_paths

    def _field_value(self, item: dict, key: str, value: Any, op: str, scope: _Scope,
                     logical: str) -> tuple[Any, Any] | None:
        """A field's value with its expressions evaluated, and where a bare argument came from; None
        when it fails (said, unless a failed parameter it reads was said already)."""
        try:
            return self._substitute(value, key, op, scope)
        except _Located as exc:
            d = exc.diagnostic
            if not d.location.line:       # located at the field itself
                d = error(d.message, f"{logical}.{key}", locate(item, (key,)), hint=d.hint, value=d.value)
            self.errors.append(d)
        except expr.ExprError as exc:
            if exc.unknown in self.failed_params:
                return None          # the parameter's own error says it once
            hint = None
            if "never closed" in str(exc) or "unmatched" in str(exc):
                hint = "inside { } or [ ] YAML splits at commas: quote the expression"
            self.errors.append(error(str(exc), f"{logical}.{key}", locate(item, (key,)), value=value, hint=hint))
        return None

    def _field_errors(self, exc: ValidationError, item: dict, logical: str, field_locs: dict[str, Location],
                      field_paths: dict[str, str]) -> None:
        """The op model's validation errors, each at the field's place: a value a block argument gave
        is said at that argument."""
        for d in pydantic_errors(exc, item, logical):
            key = d.path[len(logical) + 1:].split(".")[0] if d.path.startswith(logical + ".") else ""
            if key in field_paths:
                d = error(d.message, field_paths[key], field_locs[key], value=d.value,
                          hint=f"used as {key!r} of {logical}")
            elif key in field_locs and d.location == getattr(item, "loc", None):
                d = d.at(field_locs[key])
            self.errors.append(d)

    def _layer_inputs(self, index: int, spec: Any, item: dict, scope: _Scope, previous: str, logical: str) -> None:
        """Queue the references to layer ``index``'s inputs (``previous`` where it names none)."""
        where = getattr(item, "loc", Location(self.file))
        refs = spec.input_names()
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
        if shape is None or len(shape) not in (3, 4):      # an image, or a clip (C, T, H, W)
            raise _Located(error("cannot compute the value: the shape of the block's input is not known here",
                                 value=text,
                                 hint="the layers before the block must be valid, read only layers above "
                                      "them, and give an image (C, H, W) or a clip (C, T, H, W)"))
        return {**scope.values, **dict(zip(SHAPE_NAMES, (shape[0], *shape[-2:])))}


def resolve(doc: YDict, file: str) -> Spec:
    return Resolver(doc, file).run()
