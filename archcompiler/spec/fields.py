"""What the layer models' fields take, read from their type annotations once: which fields hold a
literal word (and which words), which take numbers (where a string is an expression), which take
whole numbers only. The resolver uses these tables to decide how a value given as text is read."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..ops import registry
from .layers import LayerBase


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


class _Table(Mapping):
    """One of the tables below, by spec op name, read from the op models when first looked up (the
    registry holds the installed plugins' ops too)."""

    def __init__(self, read: Callable[[type[LayerBase]], Any]) -> None:
        self._read = read
        self._made: tuple[Any, dict[str, Any]] | None = None     # (the registry it was read from, the table)

    def _get(self) -> dict[str, Any]:
        reg = registry()
        if self._made is None or self._made[0] is not reg:
            self._made = (reg, {op: self._read(lay.model) for op, lay in reg.layers.items()})
        return self._made[1]

    def __getitem__(self, op: str) -> Any:
        return self._get()[op]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


STRINGS = _Table(string_fields)
NUMERIC = _Table(numeric_fields)
INTEGER = _Table(integer_fields)
