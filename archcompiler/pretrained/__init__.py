"""Pretrained weights by name: torchvision's published files, fetched into torch's hub cache.

``archcompiler/data/pretrained.json`` holds torchvision's facts for every builder (its weights'
names, file, URL, sha256 prefix, preprocessing, category names and the builder's overrides), so
archc needs neither torchvision nor a network to know them (:mod:`.table`). ``archc predict resnet50
--pretrained cat.jpg`` looks the default weights up (:func:`weights_entry`), fetches the file once
(:func:`fetch`, :mod:`.download`) and uses the weights' recipe: its preprocessing and category names.
:func:`resolve` is what every command calls: it turns ``--pretrained`` / ``--weights NAME|URL`` into a
file and the ``--set`` values the weights need.

No torch here at import (only :attr:`Entry.preprocess` builds archc's ``Preprocess``, which
imports it), and never torchvision.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, Location, SpecError, error
from .download import cache_dir, fetch, hash_from_name, hub_dir
from .table import (
    HANDLED,
    NAME,
    OLD_KEYS,
    TABLE,
    TABLE_ENV,
    Entry,
    available,
    is_url,
    is_weights_name,
    load_table,
    weights_entry,
)


@dataclass
class Resolved:
    """What a command loads: ``weights`` (what it was given, or, for published weights and URLs, the
    file read: a ``ModelFile`` whose old-style keys are renamed as torchvision renames them, with the
    weights' category names and preprocessing), the ``overrides`` to load the spec with (the
    weights' own first, then the user's), the weights' ``entry`` and the ``file`` in the cache."""

    weights: Any
    overrides: Any
    entry: Entry | None = None
    file: str | None = None


def read_published(path: str | Path, entry: Entry | None = None, side: int | None = None) -> Any:
    """The weights in a file of torchvision's (a ``ModelFile``): keys of older checkpoints renamed as
    torchvision's modules rename them when loading; with ``entry``, its category names and archc's
    preprocessing (for a network of ``side x side`` input) attached, as a checkpoint of archc train
    holds them."""
    from ..modelfile import read_weights

    mf = read_weights(path)
    renamed = {}
    for key, value in mf.state_dict.items():
        for pattern, replacement in OLD_KEYS:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    mf.state_dict = renamed
    if entry is not None:
        mf.classes, mf.preprocess = entry.categories, entry.preprocess_dict(side)
    return mf


def _as_list(overrides: dict | list | None) -> list[str]:
    if isinstance(overrides, dict):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return list(overrides or [])


def _sets(overrides: list[str], path: str) -> bool:
    return any(o.partition("=")[0].strip() == path for o in overrides)


def resolve(spec_or_path: Any, weights: Any = None, pretrained: bool | None = False,
            overrides: dict | list | None = None, *, fetch_file: bool = True, progress: bool = True,
            note: Callable[[str], None] | None = None) -> Resolved:
    """``--pretrained`` and ``--weights NAME|URL|FILE`` of a command on ``spec_or_path``: published
    weights are fetched (unless ``fetch_file`` is false) and bring their recipe: the input size (when
    the user's ``--set input=`` does not say another, which ``note`` is told about), the preprocessing
    (as ``data.*`` values before the user's ``--set``) and the category names. A file (or nothing)
    is passed on as it is; a URL is fetched (its keys renamed as for published weights)."""
    if pretrained and weights is not None:
        raise SpecError([error("give --pretrained (the default weights) or --weights, not both", "--pretrained",
                               hint="--weights DEFAULT is --pretrained")])
    if is_url(weights):
        if not fetch_file:
            return Resolved(None, overrides)
        path = fetch(weights, progress=progress)
        return Resolved(read_published(path), overrides, None, str(path))
    if not pretrained and not is_weights_name(weights):
        return Resolved(weights, overrides)
    from ..modelfile import is_model_file
    from ..spec import load_spec

    flag = "--pretrained" if pretrained else "--weights"
    if is_model_file(spec_or_path):
        raise SpecError([error(f"{flag} names published weights of a builder; {spec_or_path} is a checkpoint",
                               flag, Location(str(spec_or_path)),
                               hint="give the builder's name as SPEC (archc predict resnet50 --pretrained ...)")])
    m = NAME.match(weights) if weights else None
    builder = m.group("builder") if m else None
    name = m.group("name") if m else None
    user = _as_list(overrides)
    spec = load_spec(spec_or_path, user)
    if builder is None or builder.endswith("_Weights"):       # torchvision's enum: the spec's own builder
        builder = spec.name
    entry = weights_entry(builder, name)
    unsupported = {k: v for k, v in entry.overrides.items() if k not in HANDLED}
    if unsupported:
        k, v = next(iter(unsupported.items()))
        raise BackendError([error(f"torchvision builds {builder} with {k}={json.dumps(v)} for the weights "
                                  f"{entry.name}, which archc's spec does not model: their outputs would differ",
                                  flag, Location(str(spec.file)))])
    c, h, w = spec.input
    crop = entry.transforms["crop"]
    own: list[str] = []
    side = None
    if _sets(user, "input"):
        if (h, w) != (crop, crop):
            side = h
            resize = entry.preprocess_dict(side)["resize"]
            (note or _stderr)(f"the weights {entry.label} were trained on {crop}x{crop} images; this network "
                              f"takes {h}x{w} (--set input): images are resized to {resize} and cropped to {h}")
    elif (h, w) != (crop, crop):
        own.append(f"input=[{c},{crop},{crop}]")
    own += entry.data_overrides(side)
    if not fetch_file:
        return Resolved(None, [*own, *user], entry)
    path = fetch(entry, progress=progress)
    return Resolved(read_published(path, entry, side), [*own, *user], entry, str(path))


def _stderr(line: str) -> None:
    print(f"archc: {line}", file=sys.stderr, flush=True)


__all__ = ["Entry", "Resolved", "TABLE", "TABLE_ENV", "available", "cache_dir", "fetch", "hash_from_name",
           "hub_dir", "is_url", "is_weights_name", "load_table", "read_published", "resolve", "weights_entry"]
