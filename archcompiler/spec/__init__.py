"""The spec language: YAML with source positions, pydantic models, safe expressions, resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..util import without_gc
from .compose import load_document, parse_override
from .resolved import Instance, Layer, Output, Spec


@without_gc
def load_spec(source: str | Path | Spec, overrides: dict[str, Any] | list[str] | None = None) -> Spec:
    """Load, merge (``extends``), override (``--set``) and validate a spec.

    ``source`` is a path to a YAML file or YAML text; ``overrides`` maps paths to values
    (``{"num_classes": 2, "inception_4b.5x5": 96}``) or is a list of ``"PATH=VALUE"`` strings.
    Raises :class:`archcompiler.SpecError` listing every located problem.
    """
    from .resolve import resolve  # on first use: resolving asks the op registry, which reads the layer vocabulary

    if isinstance(source, Spec):
        if not overrides:
            return source
        source_doc = source.document
        from .compose import apply_overrides
        from .source import clone
        doc = clone(source_doc)
        apply_overrides(doc, overrides)
        return resolve(doc, source.file)
    doc, file = load_document(source, overrides)
    return resolve(doc, file)


__all__ = ["load_spec", "load_document", "parse_override", "Spec", "Layer", "Instance", "Output"]
