"""Model files and checkpoints: written and read here, and only here.

Three kinds of file hold weights:

- ``archc build -o model.pt`` and ``archc train``'s ``best.pt`` / ``last.pt``: a ``torch.save`` of
  ``{"archc": version, "spec": {...}, "heads": bool, "state_dict": {...}}`` (training adds the class
  names, the preprocessing, the epoch and, in ``last.pt``, the optimizer's state);
- ``archc train``'s ``best.safetensors`` / ``last.safetensors``: the weights alone (no pickle), with
  the spec, the class names and the preprocessing as JSON in the file's metadata;
- a plain ``state_dict`` (a published checkpoint), or a dict holding one under ``state_dict``.

:func:`read_weights` reads any of them into a :class:`ModelFile`; errors name the file, never its
contents. torch (and safetensors) are imported only here, only when such a file is opened or written,
so ``archc draw`` and ``archc validate`` stay free of them until asked to read one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BackendError, Location, error
from .spec import Spec, load_spec

SUFFIXES = (".pt", ".pth", ".safetensors")
SAFETENSORS_FORMAT = "archc-checkpoint"


def is_model_file(source: Any) -> bool:
    """Whether ``source`` names a file of weights (by its suffix) rather than a spec."""
    return isinstance(source, (str, Path)) and str(source).endswith(SUFFIXES)


def first_line(exc: Exception) -> str:
    """What torch.load said, in one line (its weights-only refusal is a page long)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Weights only load failed" in text:
        return "not a file of tensors that loads safely"
    return text[:300]


@dataclass
class ModelFile:
    """The weights read from one file, and what the file says about them (``None``: it does not say)."""

    label: str                               # the file name, for messages (never the contents)
    state_dict: dict[str, Any]
    spec: Any = None                         # the resolved spec, as plain data (a dict, unless tampered with)
    spec_file: str | None = None             # the YAML file the spec came from, when known
    heads: bool | None = None                # whether the weights include the training-only heads
    classes: list[str] | None = None
    preprocess: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)    # epoch, history, best, optimizer, ... (.pt only)

    @property
    def spec_name(self) -> str | None:
        return self.spec.get("name") if isinstance(self.spec, dict) else None

    def payload(self) -> dict[str, Any]:
        """The dict a ``.pt`` file holds."""
        out: dict[str, Any] = {"state_dict": self.state_dict}
        for key in ("spec", "spec_file", "heads", "classes", "preprocess"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}


def _is_state_dict(data: Any) -> bool:
    import torch

    return isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())


def _not_weights(label: str, what: str) -> BackendError:
    return BackendError([error(f"{label} holds no state_dict ({what})", "--weights", Location(label),
                               hint="archc reads torch.save files of tensors (a state_dict, or a dict holding one "
                                    "under 'state_dict') and .safetensors files")])


def from_payload(data: Any, label: str) -> ModelFile:
    """A :class:`ModelFile` from what a ``.pt`` file (or a caller) holds."""
    if _is_state_dict(data):
        return ModelFile(label, data)
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise _not_weights(label, "not a mapping of names to tensors")
    if not _is_state_dict(data["state_dict"]):
        raise _not_weights(label, "its 'state_dict' is not a mapping of names to tensors")
    rest = {k: v for k, v in data.items()
            if k not in ("state_dict", "spec", "spec_file", "heads", "classes", "preprocess")}
    heads = data.get("heads")
    if heads is not None and not isinstance(heads, bool):
        raise BackendError([error("'heads' in the model file is not true or false", "heads", Location(label))])
    classes = data.get("classes")
    return ModelFile(label, data["state_dict"], spec=data.get("spec"),
                     spec_file=data.get("spec_file") if isinstance(data.get("spec_file"), str) else None,
                     heads=heads if isinstance(heads, bool) else None,
                     classes=[str(c) for c in classes] if isinstance(classes, list) else None,
                     preprocess=data.get("preprocess") if isinstance(data.get("preprocess"), dict) else None,
                     extra=rest)


def read_weights(source: str | Path | dict | ModelFile, what: str = "--weights") -> ModelFile:
    """The weights in ``source``: a file (``.pt``/``.pth``: torch.save, ``.safetensors``), an
    already-read :class:`ModelFile`, or a dict (a state_dict or a checkpoint's payload)."""
    if isinstance(source, ModelFile):
        return source
    if isinstance(source, dict):
        return from_payload(source, "the given state_dict")
    label = str(source)
    if label.endswith(".safetensors"):
        return _read_safetensors(Path(source), what)
    import torch

    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackendError([error(f"no such weights file: {label}", what, Location(label))]) from None
    except IsADirectoryError:
        raise BackendError([error(f"{label} is a folder, not a weights file", what, Location(label))]) from None
    except Exception as exc:
        raise BackendError([error(f"cannot read weights from {label}: {first_line(exc)}", what, Location(label),
                                  hint="archc reads torch.save files of tensors (weights_only=True): a "
                                       "state_dict, or a dict holding one under 'state_dict'; and .safetensors "
                                       "files")]) from None
    return from_payload(data, label)


def _read_safetensors(path: Path, what: str) -> ModelFile:
    label = str(path)
    try:
        from safetensors import safe_open
    except ImportError:
        raise BackendError([error(f"reading {label} needs the safetensors package", what, Location(label),
                                  hint="pip install safetensors")]) from None
    if not path.is_file():
        raise BackendError([error(f"no such weights file: {label}", what, Location(label))])
    try:
        state = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for key in f.keys():    # noqa: SIM118 (safe_open is not a mapping)
                state[key] = f.get_tensor(key)
    except Exception as exc:
        raise BackendError([error(f"cannot read {label} as a safetensors file: {first_line(exc)}", what,
                                  Location(label))]) from None
    out = ModelFile(label, state)
    if meta.get("format") != SAFETENSORS_FORMAT:
        return out                      # weights from elsewhere: no archc metadata
    try:
        fields = {k: json.loads(meta[k]) for k in ("spec", "spec_file", "heads", "classes", "preprocess", "epoch")
                  if k in meta}
    except ValueError:
        raise BackendError([error(f"the metadata of {label} is not valid JSON", what, Location(label))]) from None
    return from_payload({**fields, "state_dict": state}, label)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """A file with an embedded spec (``archc build -o``, ``archc train``), as its payload dict."""
    label = str(path)
    try:
        mf = read_weights(path, what="SPEC")
    except BackendError as exc:
        if "no such weights file" in exc.errors[0].message:
            raise BackendError([error(f"no such model file: {label}", "", Location(label))]) from None
        raise
    if mf.spec is None:
        raise BackendError([error(f"{label} holds weights but no spec (it was not written by 'archc build -o' "
                                  "or 'archc train')", "", Location(label),
                                  hint="give the spec and the weights: SPEC --weights FILE")])
    return mf.payload()


# ----------------------------------------------------------------------------- writing

def write_model_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """``payload`` (a dict of plain data and tensors) as a torch.save file, written atomically."""
    import torch

    from .io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def write_safetensors(path: str | Path, mf: ModelFile) -> Path:
    """The weights of ``mf`` as a .safetensors file (no pickle), its spec, class names and
    preprocessing as JSON in the metadata; written atomically."""
    from safetensors.torch import save_file

    from .io import atomic_path
    from .version import __version__

    meta = {"format": SAFETENSORS_FORMAT, "archc": __version__}
    for key in ("spec", "spec_file", "heads", "classes", "preprocess"):
        if getattr(mf, key) is not None:
            meta[key] = json.dumps(getattr(mf, key))
    if "epoch" in mf.extra:
        meta["epoch"] = json.dumps(mf.extra["epoch"])
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in mf.state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def embedded_spec(payload: dict[str, Any] | ModelFile, overrides: dict | list | None = None,
                  file: str = "<model file>") -> Spec:
    """The spec saved in a model file: untrusted data, validated exactly like a YAML file (and it may
    not ``extends:`` another file: a saved spec is complete)."""
    if isinstance(payload, ModelFile):
        payload = payload.payload()
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
