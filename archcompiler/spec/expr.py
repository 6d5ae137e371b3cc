"""A small, safe expression language for values in specs.

A numeric field may hold an expression instead of a number: ``num_classes``,
``64 * width``, ``round_to(96 * width, 8)``, ``n5x5_reduce // 2``.  Names refer to the spec's
``params`` and, inside a block, to the block's arguments.  Paper-style names such as ``5x5`` or
``3x3_reduce`` are names too.  Only arithmetic, comparisons, ``a if c else b`` and the
functions in :data:`FUNCTIONS` exist: no attribute access, no indexing, no ``eval``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from typing import Any


class ExprError(ValueError):
    """An expression is malformed or refers to something unknown; the message says which."""


def round_to(value: float, multiple: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``multiple``, never dropping below 90% of it
    (the usual channel rounding of width-scaled networks, e.g. MobileNet's make_divisible)."""
    multiple = int(multiple)
    if multiple < 1:
        raise ExprError("round_to: multiple must be >= 1")
    floor = multiple if min_value is None else int(min_value)
    out = max(floor, int(value + multiple / 2) // multiple * multiple)
    if out < 0.9 * value:
        out += multiple
    return out


FUNCTIONS = {
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
    "ceil": math.ceil, "floor": math.floor, "sqrt": math.sqrt, "round_to": round_to,
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


def parse(text: str) -> ast.Expression:
    """Parse ``text``; raise :class:`ExprError` for syntax outside the language."""
    try:
        tree = ast.parse(_mangle(text.strip()), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression {text!r}: {exc.msg}") from None
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
    tree = parse(text)
    return {_unmangle(n.id) for n in ast.walk(tree)
            if isinstance(n, ast.Name) and n.id not in FUNCTIONS}


def evaluate(text: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate ``text`` with the names in ``scope``."""
    tree = parse(text)

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
            raise ExprError(f"unknown name {name!r} in {text!r} (known names: {known})")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            _numbers(text, left, right)
            try:
                return _BINOPS[type(node.op)](left, right)
            except (ZeroDivisionError, OverflowError) as exc:
                raise ExprError(f"{exc} in {text!r}") from None
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
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Call):
            args = [ev(a) for a in node.args]
            try:
                return FUNCTIONS[node.func.id](*args)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ExprError(f"{node.func.id}(): {exc} in {text!r}") from None
        if isinstance(node, (ast.Tuple, ast.List)):
            return [ev(e) for e in node.elts]
        raise ExprError(f"{type(node).__name__} is not allowed in expressions ({text!r})")

    value = ev(tree)
    if isinstance(value, float) and value.is_integer() and _is_integral_expr(tree):
        return int(value)
    return value


def _numbers(text: str, *values: Any) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ExprError(f"arithmetic on non-number {v!r} in {text!r}")


def _is_integral_expr(tree: ast.AST) -> bool:
    """True unless the expression divides with '/' (then a float stays a float)."""
    return not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) for n in ast.walk(tree))
