"""The JSON Schema of a spec file (``archc schema``), made from the pydantic models: editors validate and
complete specs with it; numbers in layer fields also take expressions."""

from __future__ import annotations

import json

from .document import schema_model
from .expr import FUNCTIONS


def schema_text() -> str:
    """The schema as JSON text (what ``schema/archc.schema.json`` holds)."""
    schema = schema_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archc spec"
    schema["description"] = ("An archc architecture spec. Numeric fields also take expressions over "
                             "params and block arguments, e.g. 'num_classes' or 'round_to(64 * width, 8)'; "
                             f"functions: {', '.join(sorted(FUNCTIONS))}.")
    _allow_expressions(schema)
    return json.dumps(schema, indent=2) + "\n"


def _allow_expressions(node: object) -> None:
    """Numbers in layer fields may be written as expressions: let editors accept strings there."""
    if isinstance(node, dict):
        for value in list(node.values()):
            _allow_expressions(value)
        if node.get("type") in ("integer", "number") and "enum" not in node:
            kind = node.pop("type")
            bounds = {k: node.pop(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                      if k in node}
            node["anyOf"] = [{"type": kind, **bounds}, {"type": "string", "description": "an expression"}]
    elif isinstance(node, list):
        for value in node:
            _allow_expressions(value)
