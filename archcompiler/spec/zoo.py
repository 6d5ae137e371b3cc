"""The shipped specs (package data, ``archcompiler/specs/``) and the names they answer to.

A spec declares the torchvision builders it is (``builders: {resnet101: {depth: 101}}``: each name with
the parameters it sets, as ``--set`` would), so ``archc flops resnet101`` and
``archcompiler.build("efficientnet_b3")`` need no path. A shipped spec is also reachable by its file
name without ``.yaml`` (``googlenet-small``); a builder's name comes first."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
_SECTION = re.compile(r"^builders:.*?(?=^\S|\Z)", re.M | re.S)    # to the next top-level key
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Builder:
    """A name a user can give instead of a file: the shipped spec and the parameters it sets."""

    name: str
    file: Path
    sets: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] | None = None      # the paper's numbers for this builder, where they are not the spec's

    def overrides(self) -> dict[str, Any]:
        """What loading it applies before the user's own ``--set`` (the spec takes the builder's name, and
        the builder's own ``claims``, when it has them, replace the spec's)."""
        return {"name": self.name, **self.sets, **({"claims": self.claims} if self.claims is not None else {})}


@functools.cache
def builders() -> dict[str, Builder]:
    """Every builder the shipped specs declare, in file order (the specs are archc's own files)."""
    found: dict[str, Builder] = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in spec_files():
        # only the top-level ``builders:`` section is read: parsing every whole spec would cost a
        # command that names one builder more than the analysis of most networks
        section = _SECTION.search(path.read_text(encoding="utf-8"))
        data = yaml.load(section.group(0), Loader=loader) if section else {}
        for name, sets in (data.get("builders") or {}).items():
            sets = dict(sets or {})
            claims = sets.pop("claims", None)
            found.setdefault(name, Builder(name, path, sets, claims))
    return found


def spec_files() -> list[Path]:
    """The shipped spec files, by name."""
    return sorted(SPEC_DIR.glob("*.yaml"))


def is_name(source: Any) -> bool:
    """Whether ``source`` is written as a bare name (``resnet101``), not a path or YAML text."""
    return isinstance(source, str) and bool(_NAME.match(source)) and not source.endswith((".yaml", ".yml"))


def find(name: str) -> Builder | None:
    """The builder called ``name``, else the shipped spec file ``name.yaml`` as it is, else None."""
    if not is_name(name):
        return None
    if name in builders():
        return builders()[name]
    path = SPEC_DIR / f"{name}.yaml"
    return Builder(name, path) if path in spec_files() else None


def names() -> list[str]:
    """Every name ``find`` answers: the builders, then the spec files."""
    return [*builders(), *(p.stem for p in spec_files() if p.stem not in builders())]
