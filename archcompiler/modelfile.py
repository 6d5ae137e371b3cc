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


def embedded_spec(payload: dict[str, Any], overrides: dict | list | None = None) -> Spec:
    """The spec saved in a model file, validated again like any spec."""
    return load_spec(yaml.safe_dump(payload["spec"], sort_keys=False), overrides)
