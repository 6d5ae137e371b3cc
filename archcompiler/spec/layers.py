"""The vocabulary of layer fields: the types op models are written with (whole numbers within
torch's bounds, never booleans; finite floats; pairs; names), the fields every layer has
(:class:`LayerBase`) and a row's claims.

The op models themselves live with their ops (``archcompiler/ops/``, one module each, found through
the registry); they validate *concrete* layers, after parameters, block arguments, table cells and
defaults have been substituted (see :mod:`archcompiler.spec.resolve`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Union

from pydantic import BeforeValidator, Field, StrictBool, field_validator, model_validator

from .base import Strict
from .limits import MAX_DIM, MAX_NAME_CHARS


def not_bool(value: Any) -> Any:
    """YAML's ``true`` is not the number 1: a boolean where a number belongs is an error."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean; a number is needed here")
    return value


# Numbers: never booleans; whole numbers within what torch can index; floats finite.
PosInt = Annotated[int, BeforeValidator(not_bool), Field(ge=1, le=MAX_DIM)]
NonNegInt = Annotated[int, BeforeValidator(not_bool), Field(ge=0, le=MAX_DIM)]
Float = Annotated[float, BeforeValidator(not_bool), Field(allow_inf_nan=False)]
PosFloat = Annotated[float, BeforeValidator(not_bool), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, BeforeValidator(not_bool), Field(ge=0, allow_inf_nan=False)]
Rate = Annotated[float, BeforeValidator(not_bool), Field(ge=0, lt=1)]     # a probability below 1 (dropout)
Bool = StrictBool
Pair = Union[PosInt, Annotated[list[PosInt], Field(min_length=2, max_length=2)]]
NonNegPair = Union[NonNegInt, Annotated[list[NonNegInt], Field(min_length=2, max_length=2)]]
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_QTY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)\s*$")
_PREFIX = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``[3, 5]`` -> ``(3, 5)``."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def parse_quantity(text: str | int | float, base: int = 1000) -> float:
    """``'159K'`` -> 159 * base, ``'1.5G'`` -> 1.5 * base**3; plain numbers pass through."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _QTY.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a quantity like 159K, 34M or 1.5G")
    return float(m.group(1)) * base ** _PREFIX[m.group(2).lower()]


class Claims(Strict):
    """What the paper says about a row: checked by ``archc check`` against computed values."""

    output: str | None = Field(None, description="output size as the paper prints it: HxWxC, e.g. 28x28x256")
    params: str | NonNegInt | None = Field(None, description="parameters, e.g. 159K")
    ops: str | NonNegInt | None = Field(None, description="multiply-adds, e.g. 128M")
    depth: NonNegInt | None = Field(None, description="layers with parameters in the row")

    @field_validator("output")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not _SIZE.match(v):
            raise ValueError(f"{v!r} is not an output size like 28x28x256 (H x W x C)")
        return v

    @field_validator("params", "ops")
    @classmethod
    def _qty(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_quantity(v)
        return v

    def output_chw(self) -> tuple[int, int, int] | None:
        if self.output is None:
            return None
        h, w, c = (int(g) for g in _SIZE.match(self.output).groups())
        return c, h, w


class LayerBase(Strict):
    """Fields every layer has."""

    op: str
    name: Name = Field(description="unique name; other layers refer to it")
    input: str | None = Field(None, description="the layer this one reads; default: the previous one")
    claims: Claims | None = None
    doc: str | None = Field(None, description="free text, shown in tables and diagrams")
    when: Bool | str | None = Field(None, description="a condition over the block's arguments, the parameters, "
                                    "i and N and the block's input (in_channels, in_height, in_width): the layer "
                                    "exists only where it holds; where it does not, what reads it reads its input")

    n_inputs: ClassVar[str] = "one"  # "one" or "many"

    def input_names(self) -> list[str] | None:
        return None if self.input is None else [self.input]

    @classmethod
    def word_hint(cls, op: str, key: str, word: str) -> tuple[str, str] | None:
        """(message, hint) for a word given where the field ``key`` takes a number, where the op can say
        more than "not a parameter" (a pool's padding 'same')."""
        return None


class ManyInputs(LayerBase):
    n_inputs: ClassVar[str] = "many"
    inputs: Annotated[list[str], Field(min_length=2)] = Field(description="the layers to combine")

    @model_validator(mode="before")
    @classmethod
    def _no_single_input(cls, data: Any) -> Any:
        if isinstance(data, dict) and "input" in data:
            raise ValueError("this op combines several layers: use 'inputs: [a, b, ...]', not 'input'")
        return data

    def input_names(self) -> list[str]:
        return list(self.inputs)
