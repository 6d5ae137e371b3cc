"""What every part of the resolver shares: a scope of names, a reference waiting to be resolved,
the stop at the first problem that makes the rest meaningless, and the op registry's facts the
resolver asks (a layer's shape, the hint for an unknown op)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import Diagnostic, Location
from ...ops import KNOWN_PLUGINS, LAYERS, registry
from ..base import suggest

BLOCK_INPUT = "in"          # inside a block, the block's input
NET_INPUT = "input"         # at top level, the network's input image
CLAIM_COLUMNS = ("output", "params", "ops", "depth")
REPEAT = "repeat"           # a table column (and a key of a block use): instances in a row
POSITION = ("i", "N")       # inside a block: its position among the network's block instances
# what a condition ('when') may ask of the block's input, besides arguments and parameters
SHAPE_NAMES = ("in_channels", "in_height", "in_width")
_RAW_FIELDS = {"name", "op", "input", "inputs", "doc", "claims"}

def layer_shape(layer: Any, shapes: list) -> Any:
    """The output shape of one validated layer for its input shapes, by its op's facts (the op
    registry's ``layer_shape``); raises ``ValueError`` for shapes the op refuses. Conditions on a
    block's input shape need it."""
    return registry().layer_shape(layer, shapes)


def unknown_op_hint(op: Any) -> str:
    """What to say of an op no installed package provides: the package that does, where archc knows
    one, else the closest op's name."""
    if isinstance(op, str) and op in KNOWN_PLUGINS:
        return f"the op {op!r} comes from the package {KNOWN_PLUGINS[op]}; it is not installed"
    return suggest(str(op), set(LAYERS))


_NOT_DEFAULTS = {"name", "op", "input", "inputs", "claims", "when"}     # fields a default cannot give
INIT_KINDS = ("conv", "linear", "batch_norm")
_OUTPUT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _word_message(op: str, key: str, word: str, scope: _Scope) -> tuple[str, str, Location, str]:
    """(message, path, location, hint) for a word where a number belongs."""
    known = sorted(scope.values)
    model = registry().model(op)
    better = model.word_hint(op, key, word) if model is not None else None
    if better is not None:
        return better[0], key, Location(), better[1]
    close = suggest(word, known) if known else ""
    hint = close if close.startswith("did you mean") else (
        f"parameters here: {', '.join(known)}" if known else "define it under 'params:'")
    return f"{key!r} takes a number; {word!r} is not a parameter", key, Location(), hint


class _Located(Exception):
    """A problem found while substituting a value, already located (at the table cell)."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


class _Stop(Exception):
    """Expansion stopped at a bound; the diagnostic says which."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


@dataclass
class _Scope:
    """Names visible while expanding one list of layers (the top level or one block instance)."""

    prefix: str                              # "" or "inception_3a/"
    values: dict[str, Any]                   # params (+ block args) for expressions
    value_src: dict[str, tuple[Location, str]]  # where each arg came from (cell location, path)
    block_input: str | None = None           # full name of the block's input (in blocks)
    local: dict[str, str] = field(default_factory=dict)  # local name -> full name of its output
    local_loc: dict[str, Location] = field(default_factory=dict)
    stack: tuple[str, ...] = ()              # blocks being expanded (for recursion)
    group: str | None = None
    row: str | None = None
    args: frozenset[str] = frozenset()       # the block's argument names (table cells)
    failed: set[str] = field(default_factory=set)  # local names whose definition was an error


@dataclass
class _Ref:
    """A reference waiting to be resolved once every name is known (forward references work)."""

    layer: int | None            # index of the layer that reads it; None: a block instance's input
    name: str                    # as written, or the previous layer's full name when path is None
    scope: _Scope
    loc: Location
    path: str | None             # logical path for messages; None: `name` is already a full name
    placeholder: str | None = None   # for a block instance's input: the "@instance" name it defines


def _dedupe(errors: list[Diagnostic]) -> list[Diagnostic]:
    """A mistake inside a block shows once, not once per use of the block."""
    out, seen = [], set()
    for d in errors:
        key = (d.location, d.message) if d.location.line else (d.path, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _logical(path: tuple) -> str:
    """A readable path: ``('layers', 3)`` -> ``layers[3]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out
