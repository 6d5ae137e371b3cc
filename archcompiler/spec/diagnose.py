"""pydantic's validation errors, translated into located :class:`~archcompiler.errors.Diagnostic` values:
the position of the value in the YAML file, a readable path, one message per value (not one per member of
a Union), and none for what only follows from another error (a required key an unknown key misspells)."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import ValidationError

from ..errors import Diagnostic, Location, error
from .source import locate


def pydantic_errors(exc: ValidationError, data: Any, base_path: str, prefix: tuple = (),
                    fallback: Location | None = None) -> list[Diagnostic]:
    """Located diagnostics for a pydantic error raised validating ``data``."""
    out = []
    errs = [(_data_path(data, tuple(e["loc"]), prefix), e) for e in exc.errors(include_url=False)]
    # several members of a Union fail on one value: the error about its value beats one about its type
    errs.sort(key=lambda pe: _TYPE_ERRORS.get(pe[1]["type"], 0))
    paths = {p for p, _ in errs}
    # (both looked up in sets, not by scanning every error for each: 20,000 unknown keys took minutes)
    outer = {q[:i] for q in paths for i in range(len(q))}        # the paths that hold another error's
    siblings: dict[tuple, list[str]] = {}                         # the keys reported missing, by holder
    for p, e in errs:
        if e["type"] == "missing" and p:
            siblings.setdefault(p[:-1], []).append(str(p[-1]))
    # 'kernal' given where 'kernel' is required: the unknown key's "did you mean" says it all
    misspelt = {(p[:-1], close) for p, e in errs if e["type"] == "unknown_key" and p
                for close in difflib.get_close_matches(str(p[-1]), siblings.get(p[:-1], []), n=1, cutoff=0.6)}
    seen: set[tuple] = set()
    for loc_path, e in errs:
        if e["type"] == "missing" and loc_path and (loc_path[:-1], loc_path[-1]) in misspelt:
            continue
        # one message per value, not one per member of a Union; the most specific one wins
        if loc_path in seen or loc_path in outer:
            continue
        seen.add(loc_path)
        is_key = e["type"] == "unknown_key"
        where = locate(data, prefix + loc_path, key=is_key)
        if not where.line and fallback is not None:
            where = fallback            # the value itself carries no position (a scalar): its holder's
        shown = ".".join(str(p) for p in loc_path)
        path = f"{base_path}.{shown}" if base_path and shown else (base_path or shown)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing" and loc_path:
            msg = f"missing required key {str(loc_path[-1])!r}"
        value = e.get("input")
        if e["type"] not in ("unknown_key", "missing") and not isinstance(value, (dict, list)):
            shown = repr(value)
            msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        out.append(error(msg, path, where, value=value if not isinstance(value, (dict, list)) else None))
    return out


_TYPE_ERRORS = {"literal_error": 2, "string_type": 2, "model_type": 2, "list_type": 2, "dict_type": 2,
                "none_required": 2, "int_type": 1, "float_type": 1, "bool_type": 1, "model_attributes_type": 2}
_UNION_TAG = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*\[.*\]|constrained-\w+|lax-\w+|strict-\w+|[A-Z]\w*|str|int|"
                        r"float|bool|none|list|dict)$")


def _data_path(data: Any, loc: tuple, prefix: tuple = ()) -> tuple:
    """Drop pydantic's union-member tags ('constrained-int', 'list[int]', ...) from a loc."""
    node: Any = data
    for part in prefix:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    out = []
    for part in loc:
        if isinstance(node, dict):
            if part not in node and isinstance(part, str) and _UNION_TAG.match(part):
                continue                       # a union member's tag, not a key of the data
            out.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if part < len(node) else None
        elif node is None and not out:
            out.append(part)
    return tuple(out)
