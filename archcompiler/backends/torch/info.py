"""What archc knows about a module it built, kept on the module as one object (``model.archc``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import BackendError, error


@dataclass(frozen=True)
class ArchcInfo:
    """The facts about a built module that saving, loading, weight checks, optimisation and training
    need: the resolved spec (plain data, as the model file stores it), each parametrised IR node's
    module path, whether the training-only heads are in the module, and, for the optimised module,
    the optimisation passes that ran (``None`` for an ordinary module)."""

    spec: dict[str, Any]
    module_paths: dict[str, str] = field(default_factory=dict)     # IR node -> module path
    heads: bool = True
    optimizations: tuple[dict[str, Any], ...] | None = None

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))


def archc_info(model: Any) -> ArchcInfo:
    """The :class:`ArchcInfo` of a module built by archc (also through ``torch.compile``'s wrapper)."""
    info = getattr(model, "archc", None)
    if not isinstance(info, ArchcInfo):
        raise BackendError([error(f"this {type(model).__name__} was not built by archc (it has no archc information)",
                                  "model", hint="build it with archcompiler.build or load it with load_model")])
    return info
