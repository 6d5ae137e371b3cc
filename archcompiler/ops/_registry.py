"""The registry: every op archc knows, found once, on first use.

Built-in ops are the modules of this package whose names do not start with ``_`` (each defines
``OP``); ops of other packages come through the entry-point group ``archcompiler.ops`` (a value
``package.module`` or ``package.module:NAME`` naming an :class:`~archcompiler.ops._base.Op`, or a
module that defines ``OP``). Installing such a package is the user's decision to trust it, as
installing any package is; a spec only names an op and never holds code. Loading reads the op
modules (pydantic models and facts) and never torch: torch code is text, and a class it needs is
named by its module path.

A plugin that fails to load, or that gives an op a name archc or another plugin already gives,
is left out and said by ``archc ops`` (``problems``); archc's own ops always win.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._base import FromOnnx, FromTorch, LayerOp, Op, OpDef, Shape

GROUP = "archcompiler.ops"
# ops that packages archc knows of provide: named in the error of a spec that uses one not installed
KNOWN_PLUGINS = {"gem_pool": "archc-gem-pool (examples/plugins/gem_pool in archc's repository: "
                             "pip install examples/plugins/gem_pool)"}


@dataclass(frozen=True)
class Provider:
    """Where an op comes from: its module, and the distribution that installed it (None: archc)."""

    module: str
    distribution: str | None = None

    @property
    def label(self) -> str:
        return "archc" if self.distribution is None else self.distribution


@dataclass
class Registry:
    kinds: dict[str, OpDef] = field(default_factory=dict)
    layers: dict[str, LayerOp] = field(default_factory=dict)          # spec op name -> its LayerOp
    lowerings: dict[type, Callable[[Any], list]] = field(default_factory=dict)
    from_torch: dict[str, FromTorch] = field(default_factory=dict)
    from_onnx: dict[str, FromOnnx] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)     # spec op name or IR kind -> provider
    modules: dict[str, Op] = field(default_factory=dict)             # module path -> what it declares
    mains: dict[str, str] = field(default_factory=dict)              # spec op name -> its main IR kind
    problems: list[str] = field(default_factory=list)

    def add(self, op: Op, provider: Provider) -> str | None:
        """Register what one module declares, or say why not (a name already taken); all or nothing."""
        if not isinstance(op, Op):
            return f"{provider.module}: OP is a {type(op).__name__}, not an archcompiler.ops.Op"
        names = [n for lay in op.layers for n in lay.names]
        for name in names:
            if name in self.layers:
                return f"{provider.module}: op {name!r} is already provided by {self.providers[name].label}"
        for kind in op.kinds:
            if kind.kind in self.kinds:
                return f"{provider.module}: IR kind {kind.kind!r} is already provided by {self.providers[kind.kind].label}"
        for key in op.from_torch:
            if key in self.from_torch:
                return f"{provider.module}: the torch call {key!r} is already read by another op"
        for key in op.from_onnx:
            if key in self.from_onnx:
                return f"{provider.module}: the ONNX op {key!r} is already read by another op"
        for lay in op.layers:
            self.lowerings[lay.model] = lay.lower
            main = lay.main or (op.kinds[0].kind if len(op.kinds) == 1 else None)
            for name in lay.names:
                self.layers[name] = lay
                self.providers[name] = provider
                if main is not None:
                    self.mains[name] = main
        for kind in op.kinds:
            self.kinds[kind.kind] = kind
            self.providers[kind.kind] = provider
        self.from_torch.update(op.from_torch)
        self.from_onnx.update(op.from_onnx)
        self.modules[provider.module] = op
        return None

    def model(self, op: str) -> type | None:
        """The pydantic model of the spec op ``op``, None where no installed package provides it."""
        lay = self.layers.get(op)
        return None if lay is None else lay.model

    def facts(self, op: str) -> OpDef | None:
        """The facts of the IR kind a spec op's layer is (its main node's), None where it has no one kind."""
        main = self.mains.get(op)
        return None if main is None else self.kinds.get(main)

    def layer_shape(self, layer: Any, shapes: list[Shape]) -> Shape:
        """The shape ``layer`` (a validated op model) gives for its input ``shapes``, by the op facts
        of what it lowers to; raises :class:`~archcompiler.ops.ShapeError` where an op refuses them."""
        for _, kind, attrs in self.lowerings[type(layer)](layer):
            shapes = [tuple(self.kinds[kind].shape(attrs, shapes))]
        return shapes[0]


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The registry, built on first use: archc's ops, then the installed plugins' (sorted by name)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build()
    return _REGISTRY


def _build() -> Registry:
    reg = Registry()
    package = importlib.import_module(__package__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"{__package__}.{info.name}"
        why = reg.add(importlib.import_module(name).OP, Provider(name))
        if why:     # archc's own ops never clash: a test keeps it so
            raise TypeError(why)
    for entry in _entry_points():
        provider = Provider(entry.value, _distribution(entry))
        try:
            loaded = entry.load()
            op = getattr(loaded, "OP", loaded)
            why = reg.add(op, provider)
        except Exception as exc:          # a plugin's own error: it is left out, and archc ops says why
            why = f"{entry.value}: could not be loaded ({type(exc).__name__}: {str(exc)[:200]})"
        if why:
            reg.problems.append(why)
    return reg


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value))


def _distribution(entry: Any) -> str:
    dist = getattr(entry, "dist", None)
    return getattr(dist, "name", None) or entry.value.split(".")[0]


class View(Mapping):
    """A read-only view of one table of the registry, built on first lookup (so importing a module
    that holds one loads nothing)."""

    def __init__(self, table: str) -> None:
        self._table = table

    def _get(self) -> Mapping:
        return getattr(registry(), self._table)

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __repr__(self) -> str:
        return f"<archc op registry: {self._table}>"
