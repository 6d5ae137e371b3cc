"""Names in generated PyTorch code: module paths (state_dict keys) and variable names."""

from __future__ import annotations

import keyword
import re

from ...errors import BackendError, error
from ...spec import Spec


def identifier(text: str) -> str:
    """A Python identifier for a spec name: '1x1' -> 'n1x1', 'conv-a' -> 'conv_a'."""
    out = re.sub(r"\W", "_", text)
    if not out or out[0].isdigit():
        out = "n" + out
    if keyword.iskeyword(out):
        out += "_"
    return out


def segment(text: str) -> str:
    """A module-path segment: digits stay (Sequential style, as in 'branch2.0'), other names
    become identifiers."""
    return text if text.isdigit() else identifier(text)


def module_path(spec: Spec, node: str) -> str:
    """The state_dict prefix of a node: the spec's ``torch.rename`` rules applied in order to the
    node name (``inception_3a/3x3_reduce``), then '/' and '.' both separate modules."""
    name = node
    for pattern, repl in spec.torch.rename:
        try:
            name = re.sub(pattern, repl, name)
        except re.error as exc:
            raise BackendError([error(f"bad torch.rename pattern {pattern!r}: {exc}", "torch.rename")]) from None
    parts = [p for p in re.split(r"[/.]", name) if p]
    return ".".join(segment(p) for p in parts)


def attr_expr(base: str, path: str) -> str:
    """Python that reaches module ``path`` from ``base``: self.a.b, or getattr(self.a, "0")."""
    expr = base
    for part in path.split("."):
        expr = f"{expr}.{part}" if part.isidentifier() else f'getattr({expr}, "{part}")'
    return expr
