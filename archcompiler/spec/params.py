"""A spec's ``params:``: evaluated in dependency order (one may use another written after it), cycles and
self-references refused, and afterwards the parameters nothing read (almost always misspellings)."""

from __future__ import annotations

import keyword
from typing import Any

from ..errors import Diagnostic, error
from . import expr
from .base import suggest
from .source import YDict, locate


def evaluate_params(doc: YDict, errors: list[Diagnostic], used: set[str], failed: set[str],
                    seed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the parameters; one may use another written before or after it (they are
    evaluated in dependency order), but not itself, directly or through others. Problems are appended
    to ``errors``; the names expressions mention are added to ``used``, parameters whose own value is an
    error to ``failed`` (so that what uses them is not reported again). ``seed`` holds values the
    parameters may use besides each other (the chosen column of ``variants:``); they are returned too."""
    values: dict[str, Any] = dict(seed or {})
    raw = doc.get("params") or {}
    pending: dict[str, str] = {}
    for name, value in raw.items():
        if not name.isidentifier() or keyword.iskeyword(name):
            errors.append(error(f"parameter name {name!r} is not a valid name", f"params.{name}",
                                     locate(doc, ("params", name), key=True),
                                     hint="use letters, digits and _ (not starting with a digit)"))
            failed.add(name)
        elif name in values:
            continue                        # the seed gives it (a variant's name, such as 'A' or 'small')
        elif isinstance(value, str):
            pending[name] = value
        else:
            values[name] = value
    while pending:
        progress = False
        for name, text in list(pending.items()):
            try:
                needs = expr.names(text)
            except expr.ExprError:
                needs = set()
            if needs & set(pending) - {name} and not needs & failed:
                continue                    # wait for the parameters it uses
            del pending[name]
            progress = True
            try:
                values[name] = expr.evaluate(text, values, used)
            except expr.ExprError as exc:
                failed.add(name)
                if exc.unknown is not None and exc.unknown in failed - {name}:
                    continue                # the parameter it uses already has its error
                hint = "a parameter cannot use itself" if exc.unknown == name else None
                errors.append(error(str(exc), f"params.{name}", locate(doc, ("params", name)),
                                         hint=hint))
        if not progress:                    # the rest use each other in a cycle
            cycle = ", ".join(pending)
            for name in pending:
                failed.add(name)
                errors.append(error(f"parameters {cycle} use each other in a cycle", f"params.{name}",
                                         locate(doc, ("params", name)),
                                         hint="give one of them a number"))
            break
    return values


def unused_params(doc: YDict, params: dict[str, Any], used: set[str], own_file: str | None = None) -> list[Diagnostic]:
    """A parameter nothing reads is almost always a misspelling (``num_clases: 2`` in a variant
    would silently keep the parent's class count); one a parent spec declares, where the variant
    deleted what read it (GoogLeNet's ``aux_dropout`` without its auxiliary heads), is not."""
    errors = []
    for name in params:
        if name in used:
            continue
        where = locate(doc, ("params", name), key=True)
        if own_file is not None and where.file not in (None, "", own_file):
            continue
        others = sorted(set(params) - {name})
        close = suggest(name, [o for o in others if o not in used] or others)
        hint = close if close.startswith("did you mean") else "remove it, or use it in a layer"
        errors.append(error(f"parameter {name!r} is not used by any layer", f"params.{name}",
                            locate(doc, ("params", name), key=True), value=name, hint=hint))
    return errors
