"""Checking generated source before anything runs it."""

from __future__ import annotations

import ast

from ...errors import BackendError, error
from .runtime import IN_GENERATED

_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars",
                    "breakpoint", "input", "setattr", "delattr"}


def check_source(source: str, classes: set[str], plugins: set[str] = frozenset()) -> None:
    """Parse the generated source and check its shape before anything runs it: imports only of
    typing and torch (and ``plugins``, the modules of installed ops' torch code), at the top; only the
    expected classes and helper functions; no call of
    eval-like builtins; no dunder attributes. Spec strings reach the source only as validated
    identifiers or through ``repr``, so this never fails unless archc itself has a bug."""

    def refuse(why: str) -> None:
        raise BackendError([error(f"generated code refused: {why}", "codegen",
                                  hint="this is a bug in archc; please report it with the spec")])

    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        refuse(f"it does not parse ({exc.msg}, line {exc.lineno})")
    allowed_top = classes | set(IN_GENERATED)
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not all(m.split(".")[0] in ("typing", "torch") or m in plugins for m in modules):
                refuse(f"it imports {', '.join(modules)}")
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            if node.name not in allowed_top:
                refuse(f"unexpected definition {node.name!r}")
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            refuse(f"unexpected top-level statement at line {node.lineno}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body:
            refuse(f"an import inside a definition at line {node.lineno}")
        if isinstance(node, ast.Name) and node.id in _FORBIDDEN_CALLS:
            refuse(f"it uses {node.id!r} at line {node.lineno}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr != "__init__":
            refuse(f"it reaches {node.attr!r} at line {node.lineno}")
