"""Files written by ``archc build -o``: weights plus the resolved spec, in one ``torch.save`` file.

Both the torch backend (``load_model``) and the diagram backend (``archc draw model.pt``) read them;
reading needs torch, which is imported only here, only when such a file is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import BackendError, Location, error
from .spec import Spec, load_spec


def first_line(exc: Exception) -> str:
    """What torch.load said, in one line (its weights-only refusal is a page long)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Weights only load failed" in text:
        return "not a file of tensors that loads safely"
    return text


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The saved payload: ``{"archc": version, "spec": {...}, "heads": bool, "state_dict": {...}}``."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackendError([error(f"no such model file: {path}", "", Location(str(path)))]) from None
    except Exception as exc:
        raise BackendError([error(f"cannot read {path}: {first_line(exc)}", "", Location(str(path)),
                                  hint="a model file is written by 'archc build -o'")]) from None
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise BackendError([error(f"{path} was not written by 'archc build -o'", "", Location(str(path)),
                                  hint="it needs the embedded spec; a plain state_dict loads with --weights")])
    return payload


def embedded_spec(payload: dict[str, Any], overrides: dict | list | None = None, file: str = "<model file>") -> Spec:
    """The spec saved in a model file: untrusted data, validated exactly like a YAML file (and it may
    not ``extends:`` another file: a saved spec is complete)."""
    data = payload["spec"]
    where = Location(f"{file} (embedded spec)", 1, 1)
    if not isinstance(data, dict):
        raise BackendError([error("the embedded spec is not a mapping", "spec", where)])
    if "extends" in data or "edits" in data:
        raise BackendError([error("the embedded spec may not use 'extends' or 'edits'", "spec", where,
                                  hint="a saved spec is complete; this file was not written by archc")])
    if not isinstance(payload.get("heads", True), bool):
        raise BackendError([error("'heads' in the model file is not true or false", "heads", where)])
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except (yaml.YAMLError, RecursionError, TypeError, ValueError) as exc:
        raise BackendError([error(f"the embedded spec is not plain data: {first_line(exc)}", "spec", where)]) from None
    return load_spec(text, overrides)
