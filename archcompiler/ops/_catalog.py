"""What ``archc ops`` lists: every spec op of the registry (archc's own and the installed plugins'),
each with its one line of doc, its fields (type, default, description) and where it comes from.

Read from the op models alone: nothing here imports torch.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from ._registry import KNOWN_PLUGINS, registry

# the fields every layer has (LayerBase's), said once by ``archc ops`` rather than for each op
COMMON_FIELDS = ("op", "name", "input", "claims", "doc", "when")


def catalog() -> list[dict[str, Any]]:
    """Every spec op: archc's own first, by name, then the plugins', by distribution and name. Each is
    ``{"op", "doc", "fields": [{"name", "type", "default", "doc"}], "provider", "kinds"}``; a required
    field's ``default`` is ``"required"``; ``kinds``: the IR kinds the op's module defines."""
    reg = registry()
    entries = []
    for name, layer in reg.layers.items():
        provider = reg.providers[name]
        declared = reg.modules.get(provider.module)
        entries.append({
            "op": name,
            "doc": layer.doc,
            "fields": fields(layer.model),
            "provider": provider.label,
            "kinds": [k.kind for k in declared.kinds] if declared is not None else [],
        })
    return sorted(entries, key=lambda e: (e["provider"] != "archc", e["provider"], e["op"]))


def problems() -> list[str]:
    """The plugins that were left out (failed to load, or named an op already taken), each in one line."""
    return list(registry().problems)


def describe(op: str) -> dict[str, Any] | None:
    """The catalog entry of the spec op ``op``, None where no installed package provides it."""
    return next((e for e in catalog() if e["op"] == op), None)


def unknown(op: str) -> tuple[str, str]:
    """What to say of an op no installed package provides: the message and its hint ("did you mean",
    and the package that provides it where archc knows one)."""
    from ..spec.base import suggest

    if op in KNOWN_PLUGINS:
        return (f"op {op!r} is not installed: it comes from the package {KNOWN_PLUGINS[op]}",
                "archc ops lists the ops installed")
    return f"no op {op!r}", suggest(op, set(registry().layers)) or "archc ops lists the ops installed"


def fields(model: type) -> list[dict[str, Any]]:
    """The YAML fields of an op model, in declaration order, without the ones every layer has."""
    out = []
    for name, info in model.model_fields.items():
        if name in COMMON_FIELDS:
            continue
        out.append({
            "name": info.alias or name,
            "type": type_text(info.annotation, info.metadata),
            "default": "required" if info.is_required() else _jsonable(info.get_default(call_default_factory=True)),
            "doc": info.description or "",
        })
    return out


def type_text(annotation: Any, metadata: list | tuple = (), bounds: bool = True) -> str:
    """A pydantic annotation as short readable text: ``int >= 1``, ``int | [int, int]``,
    ``'first' | 'second'``, ``float``. Bounds are shown where the type is one type, not in a union."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return type_text(inner, [*metadata, *extra], bounds)
    if origin is Literal:
        return " | ".join(_literal(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return type_text(members[0], metadata, bounds)
        return " | ".join(dict.fromkeys(type_text(m, (), False) for m in members))
    if origin in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        item = type_text(args[0], (), False) if args else "any"
        lo, hi = _length(metadata)
        if lo is not None and lo == hi and lo <= 4:
            return "[" + ", ".join([item] * lo) + "]"
        return f"[{item}, ...]"
    if origin is dict:
        key, value = (get_args(annotation) or (Any, Any))[:2]
        return f"{{{type_text(key, (), False)}: {type_text(value, (), False)}}}"
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        names = [info.alias or n for n, info in annotation.model_fields.items()]
        return "{" + ", ".join(names) + "}"
    base = {bool: "bool", int: "int", float: "float", str: "text"}.get(annotation) \
        if isinstance(annotation, type) else None
    base = base or ("any" if annotation is Any else getattr(annotation, "__name__", str(annotation)))
    return base + (_bounds(metadata) if bounds and base in ("int", "float") else "")


def _literal(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _constraint(metadata: list | tuple, *names: str) -> Any:
    """The value of the first constraint called one of ``names`` in pydantic's metadata (annotated_types'
    Ge / Gt / Le / Lt / MinLen / MaxLen, or a FieldInfo's own metadata)."""
    for m in metadata:
        for name in names:
            value = getattr(m, name, None)
            if value is not None and not callable(value):
                return value
        nested = getattr(m, "metadata", None)
        if isinstance(nested, list) and nested:
            value = _constraint(nested, *names)
            if value is not None:
                return value
    return None


def _length(metadata: list | tuple) -> tuple[int | None, int | None]:
    return _constraint(metadata, "min_length"), _constraint(metadata, "max_length")


def _bounds(metadata: list | tuple) -> str:
    from ..spec.limits import MAX_DIM

    ge, gt = _constraint(metadata, "ge"), _constraint(metadata, "gt")
    le, lt = _constraint(metadata, "le"), _constraint(metadata, "lt")
    if le == MAX_DIM:        # the bound of every size (what torch can index): no news for a reader
        le = None
    low, high = (ge, "[") if ge is not None else (gt, "("), (le, "]") if le is not None else (lt, ")")
    if low[0] is not None and high[0] is not None:          # float in [0, 1)
        return f" in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    if low[0] is not None:
        return f" {'>=' if low[1] == '[' else '>'} {low[0]:g}"
    if high[0] is not None:
        return f" {'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return ""


def markdown(entries: list[dict[str, Any]] | None = None) -> str:
    """The README's op table: one row per op model (ops that share one, such as the activations, in one
    row), its fields with their defaults, and its doc; made from the op modules, so it cannot go stale
    (``archc ops --format markdown``)."""
    rows: dict[tuple, list[str]] = {}
    for e in catalog() if entries is None else entries:
        shown = tuple(_md_field(f) for f in e["fields"])
        rows.setdefault((shown, e["doc"], e["provider"]), []).append(e["op"])
    lines = ["| op | fields (defaults) | what it is |", "|---|---|---|"]
    for (shown, doc, provider), ops in rows.items():
        origin = "" if provider == "archc" else f" (from {provider})"
        lines.append(f"| {', '.join(f'`{op}`' for op in ops)}{origin} | {', '.join(shown) or '—'} | "
                     f"{doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _md_field(f: dict[str, Any]) -> str:
    """One field in the op table: its name; its default, or where it has none its doc's "default: ..."; the
    words it takes where it takes words (``padding``: a number, a pair, 'same' or 'valid')."""
    value = f["default"]
    parts = []
    if value is None and f["doc"].startswith("default:"):
        parts.append(f["doc"].split(";")[0])
    elif value is None:
        parts.append("optional")
    elif value != "required":
        parts.append(str(value).lower() if isinstance(value, bool) else json.dumps(value) if isinstance(value, list)
                     else f"{value}")
    if "'" in f["type"] or "{" in f["type"]:
        parts.append(f["type"].replace("|", "or"))
    return f"`{f['name']}`" + (f" ({'; '.join(parts)})" if parts else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _jsonable(dump(exclude_defaults=True))
    return str(value)


__all__ = ["catalog", "problems", "describe", "unknown", "fields", "type_text", "markdown", "COMMON_FIELDS"]
