"""A small, safe expression language for values in specs.

A numeric field may hold an expression instead of a number: ``num_classes``,
``64 * width``, ``round_to(96 * width, 8)``, ``n5x5_reduce // 2``.  Names refer to the spec's
``params`` and, inside a block, to the block's arguments.  Paper-style names such as ``5x5`` or
``3x3_reduce`` are names too.  Only arithmetic, comparisons, ``a if c else b`` and the
functions in :data:`FUNCTIONS` exist: no attribute access, no indexing, no ``eval``.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

from .limits import MAX_EXPR_CHARS, MAX_EXPR_DEPTH, MAX_EXPR_NODES, MAX_INT_BITS


class ExprError(ValueError):
    """An expression is malformed or refers to something unknown; the message says which
    (``unknown`` is the unknown name, when that is the problem)."""

    def __init__(self, message: str, unknown: str | None = None):
        super().__init__(message)
        self.unknown = unknown


def round_to(value: float, multiple: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``multiple``, never dropping below 90% of it
    (the usual channel rounding of width-scaled networks, e.g. MobileNet's make_divisible)."""
    multiple = int(multiple)
    if multiple < 1:
        raise ExprError("the multiple must be >= 1")
    if value <= 0:
        # rounding must never turn a zero or negative channel count into a valid-looking one
        raise ExprError(f"the value must be positive, got {value!r}")
    floor = multiple if min_value is None else int(min_value)
    out = max(floor, int(value + multiple / 2) // multiple * multiple)
    if out < 0.9 * value:
        out += multiple
    return out


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible`` (MobileNet, EfficientNet): ``value`` rounded to the nearest
    multiple of ``divisor``, at least ``min_value`` (default: the divisor), never below 90% of it."""
    return round_to(value, divisor, min_value)


def round_to_multiple(value: float, divisor: int = 8, bias: float = 0.9) -> int:
    """MNASNet's ``_round_to_multiple_of``: like :func:`make_divisible`, but the result may drop to
    ``bias`` (0 < bias < 1) of the value before it is rounded up instead."""
    if not 0 < bias < 1:
        raise ExprError(f"the bias must lie between 0 and 1, got {bias!r}")
    divisor = int(divisor)
    if divisor < 1:
        raise ExprError("the divisor must be >= 1")
    if value <= 0:
        raise ExprError(f"the value must be positive, got {value!r}")
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out if out >= bias * value else out + divisor


FUNCTIONS = {
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
    "ceil": math.ceil, "floor": math.floor, "sqrt": math.sqrt, "round_to": round_to,
    "make_divisible": make_divisible, "round_to_multiple": round_to_multiple,
}

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
# Names like 5x5, 3x3_reduce, 1x1 (the paper's column names) are not Python identifiers:
# they are rewritten to _k5x5 ... before parsing and back in messages.
_PAPER_NAME = re.compile(r"(?<![\w.])(\d+x\d+\w*)")
_MANGLE = "_k"


def _mangle(text: str) -> str:
    return _PAPER_NAME.sub(lambda m: _MANGLE + m.group(1), text)


def _unmangle(name: str) -> str:
    return name[len(_MANGLE):] if name.startswith(_MANGLE) and name[len(_MANGLE):][:1].isdigit() else name


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _depth(node: ast.AST, limit: int) -> int:
    """The nesting depth of ``node``'s tree, computed without recursion (stops past ``limit``)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(current))
    return deepest


def parse(text: str) -> ast.Expression:
    """Parse ``text``; raise :class:`ExprError` for syntax outside the language or past its bounds.
    The tree is shared between callers (a table repeats its expressions): never change it."""
    return _parsed(text)[0]


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> tuple[ast.Expression, frozenset[str], frozenset[str]]:
    """The tree, the names it refers to (functions left out) and every name in it; cached."""
    tree = _parse(text)
    every = frozenset(_unmangle(n.id) for n in ast.walk(tree) if isinstance(n, ast.Name))
    refs = frozenset(_unmangle(n.id) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in FUNCTIONS)
    return tree, refs, every


def _parse(text: str) -> ast.Expression:
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression {_short(text)} is {len(text)} characters long; at most "
                        f"{MAX_EXPR_CHARS} are allowed")
    try:
        tree = ast.parse(_mangle(text.strip()), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression {_short(text)}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression {_short(text)} is nested too deeply") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_EXPR_NODES:
        raise ExprError(f"expression {_short(text)} has {nodes} parts; at most {MAX_EXPR_NODES} are allowed")
    if _depth(tree, MAX_EXPR_DEPTH) > MAX_EXPR_DEPTH:
        raise ExprError(f"expression {_short(text)} is nested more than {MAX_EXPR_DEPTH} levels deep")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda, ast.ListComp, ast.DictComp,
                             ast.SetComp, ast.GeneratorExp, ast.Starred, ast.NamedExpr, ast.Await,
                             ast.Yield, ast.YieldFrom, ast.JoinedStr, ast.Dict, ast.Set)):
            raise ExprError(f"{type(node).__name__.lower()} is not allowed in expressions ({text!r})")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                name = getattr(node.func, "id", "?")
                raise ExprError(f"unknown function {name!r} in {text!r}; "
                                f"available: {', '.join(sorted(FUNCTIONS))}")
    return tree


def names(text: str) -> set[str]:
    """The parameter / argument names an expression refers to."""
    return set(_parsed(text)[1])


def evaluate(text: str, scope: Mapping[str, Any], used: set[str] | None = None) -> Any:
    """Evaluate ``text`` with the names in ``scope`` (each name it mentions is added to ``used``)."""
    tree, _, every = _parsed(text)
    if used is not None:
        used.update(every)

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)) or node.value is None:
                return node.value
            raise ExprError(f"constant {node.value!r} is not allowed")
        if isinstance(node, ast.Name):
            name = _unmangle(node.id)
            if name in scope:
                return scope[name]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            known = ", ".join(sorted(scope)) or "none"
            raise ExprError(f"unknown name {name!r} in {_short(text)} (known names: {known})", unknown=name)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            _numbers(text, left, right)
            if isinstance(node.op, ast.Pow):
                _check_power(text, left, right)
            try:
                return _bounded(text, _BINOPS[type(node.op)](left, right))
            except (ZeroDivisionError, OverflowError) as exc:
                raise ExprError(f"{exc} in {_short(text)}") from None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            value = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            _numbers(text, value)
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                try:
                    if not _CMPOPS[type(op)](left, right):
                        return False
                except TypeError:
                    raise ExprError(f"cannot compare {left!r} with {right!r} in {_short(text)}") from None
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Call):
            args = [ev(a) for a in node.args]
            _numbers(text, *args)
            try:
                return _bounded(text, FUNCTIONS[node.func.id](*args))
            except (TypeError, ValueError, OverflowError) as exc:
                raise ExprError(f"{node.func.id}(): {exc} in {_short(text)}") from None
        if isinstance(node, (ast.Tuple, ast.List)):
            return [ev(e) for e in node.elts]
        raise ExprError(f"{type(node).__name__} is not allowed in expressions ({text!r})")

    value = ev(tree)
    if isinstance(value, (int, float)):
        value = _bounded(text, value)
    if isinstance(value, float) and value.is_integer() and _is_integral_expr(tree):
        return int(value)
    return value


def _numbers(text: str, *values: Any) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ExprError(f"arithmetic on non-number {v!r} in {_short(text)}")


def _check_power(text: str, base: float, exponent: float) -> None:
    """Refuse ``base ** exponent`` before computing it when the result could not be a spec value
    (``9**9**9`` would otherwise take minutes and gigabytes)."""
    if abs(base) > 1 and exponent > 0 and exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise ExprError(f"{base!r} ** {exponent!r} is too large in {_short(text)} "
                        f"(results stay below 2**{MAX_INT_BITS})")


def _bounded(text: str, value: Any) -> Any:
    """Every number an expression computes is finite and below 2**MAX_INT_BITS."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExprError(f"a value in {_short(text)} is too large (results stay below 2**{MAX_INT_BITS})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError(f"{_short(text)} is not a finite number")
    if isinstance(value, float) and abs(value) >= 2.0 ** MAX_INT_BITS:
        raise ExprError(f"a value in {_short(text)} is too large (results stay below 2**{MAX_INT_BITS})")
    return value


def _is_integral_expr(tree: ast.AST) -> bool:
    """True unless the expression divides with '/' (then a float stays a float)."""
    return not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) for n in ast.walk(tree))
