"""What the layer models' fields take, read from their type annotations once: which fields hold a
literal word (and which words), which take numbers (where a string is an expression), which take
whole numbers only. The resolver uses these tables to decide how a value given as text is read."""

from __future__ import annotations

import typing
from typing import Any

from .layers import OPS, LayerBase


def string_fields(model: type[LayerBase]) -> dict[str, set[str] | None]:
    """Fields that may hold a literal string: name -> allowed words (None: any string)."""
    out: dict[str, set[str] | None] = {}

    def words(tp: Any) -> set[str] | None | bool:
        origin = typing.get_origin(tp)
        if tp is str:
            return None
        if origin is typing.Literal:
            return {a for a in typing.get_args(tp) if isinstance(a, str)}
        if origin in (typing.Union, typing.Annotated) or str(origin) == "<class 'types.UnionType'>":
            found: set[str] | None | bool = False
            for arg in typing.get_args(tp):
                w = words(arg)
                if w is None:
                    return None
                if w is not False:
                    found = (found or set()) | w
            return found
        return False

    for name, info in model.model_fields.items():
        w = words(info.annotation)
        if w is not False:
            out[name] = w
    return out


def numeric_fields(model: type[LayerBase]) -> set[str]:
    """Fields that take numbers (where a string is an expression to evaluate)."""
    def numeric(tp: Any) -> bool:
        if tp in (int, float):
            return True
        return any(numeric(a) for a in typing.get_args(tp) if a is not bool)
    return {name for name, info in model.model_fields.items() if numeric(info.annotation)}


def integer_fields(model: type[LayerBase]) -> set[str]:
    """Fields that take whole numbers only (channels, kernels, strides, ...)."""
    def ints(tp: Any) -> bool:
        args = [a for a in typing.get_args(tp) if a is not bool]
        if tp is int:
            return True
        if tp is float or any(a is float for a in args):
            return False
        return any(ints(a) for a in args)
    return {name for name, info in model.model_fields.items() if ints(info.annotation)}


STRINGS = {op: string_fields(model) for op, model in OPS.items()}
NUMERIC = {op: numeric_fields(model) for op, model in OPS.items()}
INTEGER = {op: integer_fields(model) for op, model in OPS.items()}
