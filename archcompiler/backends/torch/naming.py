"""Names in generated PyTorch code: module paths (state_dict keys) and variable names."""

from __future__ import annotations

import builtins
import functools
import keyword
import re

from ...errors import BackendError, error
from ...spec import Spec
from ...spec.document import GENERATED_NAMES

# Local variables of forward() never take these: the generated module's own names and Python's.
RESERVED_VARIABLES = frozenset(GENERATED_NAMES - {"x"}) | frozenset(dir(builtins))
# Submodules never take these: attributes of nn.Module and of the generated class.
MODULE_ATTRIBUTES = frozenset({
    "forward", "training", "loss", "predict_proba", "init_weights", "code", "LOSSES", "INIT", "INPUT_SHAPE",
    "T_destination", "dump_patches", "call_super_init",
})


def identifier(text: str) -> str:
    """A Python identifier for a spec name: '1x1' -> 'n1x1', 'conv-a' -> 'conv_a'."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if not out or out[0].isdigit():
        out = "n" + out
    if keyword.iskeyword(out):
        out += "_"
    return out


def variable(text: str) -> str:
    """A local variable name for a spec name: an identifier that shadows nothing the generated
    code uses ('torch' -> 'torch_', 'self' -> 'self_')."""
    out = identifier(text)
    while out in RESERVED_VARIABLES or out.startswith("__"):
        out += "_"
    return out


@functools.lru_cache(maxsize=1)
def _module_attributes() -> frozenset[str]:
    import torch

    return MODULE_ATTRIBUTES | {a for a in dir(torch.nn.Module) if not a.startswith("__")}


# torchvision's RegNet names its blocks 'block1-0': a module name (add_module takes it), not an identifier
_HYPHENATED = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+")


def segment(text: str, renamed: bool = False) -> str:
    """A module-path segment: digits stay (Sequential style, as in 'branch2.0'), and so do words
    joined by hyphens that a torch.rename rule wrote ('block1-0', which no attribute has); other
    names become identifiers that no attribute of nn.Module or of the generated class has
    ('forward' -> 'forward_', a layer named 'conv-a' -> 'conv_a', as before)."""
    if text.isdigit() or (renamed and _HYPHENATED.fullmatch(text)):
        return text
    out = identifier(text)
    if out.startswith("_"):
        out = "m" + out
    taken = _module_attributes()
    while out in taken:
        out += "_"
    return out


def module_paths(spec: Spec, nodes: list[str]) -> dict[str, str]:
    """The state_dict prefix of each node of ``nodes`` (all the graph's nodes, in network order):
    the spec's ``torch.rename`` rules applied in order to the node name (``inception_3a/3x3_reduce``),
    then '/' and '.' both separate modules. A replacement's ``{index}`` is the position of the text
    the rule matched among the distinct texts it matched before, in ``nodes``' order (the numbering
    of torchvision's ``nn.Sequential``, parameterless modules counted)."""
    from ...spec.rename import apply_rules

    try:
        names = apply_rules(spec.torch.rename, list(nodes))
    except ValueError as exc:
        raise BackendError([error(str(exc), "torch.rename")]) from None
    out = {}
    for node, name in zip(nodes, names):
        own = set(re.split(r"[/.]", node))          # segments of the spec's own name, not a rule's
        parts = [p for p in re.split(r"[/.]", name) if p]
        out[node] = ".".join(segment(p, renamed=p not in own) for p in parts)
    return out


def attr_expr(base: str, path: str) -> str:
    """Python that reaches module ``path`` from ``base``: self.a.b, or getattr(self.a, "0")."""
    expr = base
    for part in path.split("."):
        expr = f"{expr}.{part}" if part.isidentifier() else f'getattr({expr}, "{part}")'
    return expr
