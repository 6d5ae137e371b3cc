"""The pydantic base class of every spec model: frozen, unknown keys refused with a suggestion."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


def suggest(word: str, choices: list[str] | set[str]) -> str:
    """'did you mean ...?' text, or a list of what is allowed when nothing is close."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "allowed: " + ", ".join(sorted(choices)) if choices else ""


def _literal(message: str) -> str:
    """A message with no pydantic template fields in it."""
    return message.replace("{", "(").replace("}", ")")


class Strict(BaseModel):
    """Unknown keys are errors ("did you mean ...?"), reported together with every other field
    error of the same mapping, so one run shows all problems."""

    # defer_build: a model's validator is built when first used, so start-up stays fast
    model_config = ConfigDict(frozen=True, populate_by_name=True, protected_namespaces=(), defer_build=True)

    @classmethod
    def allowed_keys(cls) -> set[str]:
        keys = set()
        for name, info in cls.model_fields.items():
            keys.add(info.alias or name)
        return keys

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any, handler):
        if not isinstance(data, dict):
            return handler(data)
        allowed = cls.allowed_keys()
        unknown = [k for k in data if k not in allowed]
        if not unknown:
            return handler(data)
        details: list[InitErrorDetails] = [
            InitErrorDetails(
                type=PydanticCustomError("unknown_key", _literal(
                    f"unknown key {str(k)!r}; {suggest(k, allowed)}")),
                loc=(k,), input=data[k])
            for k in unknown
        ]
        try:
            handler({k: v for k, v in data.items() if k in allowed})
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                details.append(InitErrorDetails(
                    type=PydanticCustomError(e["type"], _literal(e["msg"])),
                    loc=e["loc"], input=e.get("input")))
        raise ValidationError.from_exception_data(cls.__name__, details)
