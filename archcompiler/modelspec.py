"""The spec a model file carries (``archc train``'s checkpoints, ``archc build -o model.pt``): untrusted data,
validated exactly as a YAML file is, every refusal located in the model file and bounded (a changed file
of 60,000 unknown keys is a few lines, not 60,000)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml

from .errors import BackendError, Diagnostic, Location, SpecError, error
from .modelfile import MAX_MESSAGE_CHARS, MAX_SPEC_ERRORS, TAMPERED, ModelFile, _cut, first_line
from .spec import Spec
from .spec.limits import MAX_NAME_CHARS


def embedded_spec(payload: dict[str, Any] | ModelFile, overrides: dict | list | None = None,
                  file: str = "<model file>") -> Spec:
    """The spec saved in a model file: untrusted data, validated exactly like a YAML file (and it may
    not ``extends:`` another file: a saved spec is complete)."""
    if isinstance(payload, ModelFile):
        payload = payload.payload()
    data = payload["spec"]
    where = Location(f"{file} (embedded spec)", 1, 1)
    if not isinstance(data, dict):
        raise BackendError([error("the embedded spec is not a mapping", "spec", where)])
    if "extends" in data or "edits" in data:
        raise BackendError([error("the embedded spec may not use 'extends' or 'edits'", "spec", where,
                                  hint="a saved spec is complete; this file was not written by archc")])
    if not isinstance(payload.get("heads", True), bool):
        raise BackendError([error("'heads' in the model file is not true or false", "heads", where)])
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except (yaml.YAMLError, RecursionError, TypeError, ValueError) as exc:
        raise BackendError([error(f"the embedded spec is not plain data: {first_line(exc)}", "spec", where)]) from None
    return _load_embedded(text, overrides, where.file)


def _load_embedded(text: str, overrides: dict | list | None, name: str) -> Spec:
    """:func:`load_spec` of the YAML text of an embedded spec, its values located in ``name`` (``FILE
    (embedded spec)``), not in ``<string>``: every refusal of the spec, now or when it is built, names
    the model file. (The text has no ``extends``: it is read as load_spec reads a file without one.)"""
    from .spec.compose import apply_overrides
    from .spec.resolve import resolve
    from .spec.source import YDict, parse_yaml
    from .util import paused_gc

    try:
        with paused_gc():
            doc = parse_yaml(text, name)
            if not isinstance(doc, YDict):
                raise BackendError([error("the embedded spec is not a mapping", "spec", Location(name, 1, 1))])
            apply_overrides(doc, overrides)
            return resolve(doc, name)
    except SpecError as exc:
        # a spec file's every problem is listed, as it says it, for its author; a checkpoint's spec is
        # archc's own, changed since: the first few problems say so, each in a bounded line (a file of
        # 60,000 unknown keys is not 60,000 lines, an op given as a mapping of 20,000 keys not 300 KB)
        errors = [_bounded(d) for d in exc.errors]
        if len(errors) > MAX_SPEC_ERRORS + 1:
            errors = [*errors[:MAX_SPEC_ERRORS], error(f"... and {len(errors) - MAX_SPEC_ERRORS:,} more problems "
                                                      "in the embedded spec", "spec", Location(name), hint=TAMPERED)]
        raise SpecError(errors) from None


def _bounded(d: Diagnostic) -> Diagnostic:
    """A problem of an embedded spec with its message, path and hint cut short, and its value kept only
    when it is a short scalar (``--format json`` prints it)."""
    value = d.value if d.value is None or isinstance(d.value, (bool, int, float)) or \
        isinstance(d.value, str) and len(d.value) <= MAX_NAME_CHARS else None
    return replace(d, message=_cut(d.message, MAX_MESSAGE_CHARS), path=_cut(d.path, MAX_NAME_CHARS + 100),
                   hint=None if d.hint is None else _cut(d.hint, MAX_MESSAGE_CHARS), value=value)
