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
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BackendError, Location, error
from .spec.limits import MAX_NAME_CHARS, MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

SUFFIXES = (".pt", ".pth", ".safetensors")
SAFETENSORS_FORMAT = "archc-checkpoint"

# What a checkpoint may hold besides its tensors is untrusted data: every field is checked against these
# bounds (far above what archc writes) before anything uses it, and refused naming the file and the field.
MAX_METADATA_CHARS = 4 * MAX_SPEC_BYTES     # one JSON field of a .safetensors file's metadata
MAX_PATH_CHARS = 4096                       # spec_file: the path of the YAML file the spec came from
MAX_CLASSES = 100_000                       # class names (their count must also be the network's outputs')
MAX_CLASS_CHARS = 256                       # one class name (a folder name)
MAX_IMAGE_SIDE = 4096                       # preprocess.size and preprocess.resize, in pixels
# a .pt file is a zip archive whose records torch.save writes uncompressed ("stored"); before torch
# reads one, the sizes its records declare are checked: a compressed record may not inflate past
# max(MAX_INFLATED_BYTES, INFLATE_RATIO x the file's size) in all (a zip bomb is refused unread)
MAX_INFLATED_BYTES = 64 * 1024 * 1024
INFLATE_RATIO = 16
MAX_RECORDS = 200_000
MAX_SPEC_ERRORS = 5                         # of the problems of a checkpoint's spec, the first few are said,
MAX_MESSAGE_CHARS = 1000                    # each in a line of at most about this many characters
# the preprocessing fields (archcompiler.training.data.Preprocess), their kinds and defaults (None: required)
PREPROCESS_FIELDS: dict[str, tuple[str, Any]] = {
    "size": ("side", None), "resize": ("side", None), "mean": ("floats", None), "std": ("floats", None),
    "interpolation": ("interpolation", "bilinear"), "random_resized_crop": ("bool", True),
    "min_scale": ("fraction", 0.08), "horizontal_flip": ("bool", True)}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def is_model_file(source: Any) -> bool:
    """Whether ``source`` names a file of weights (by its suffix) rather than a spec."""
    return isinstance(source, (str, Path)) and str(source).endswith(SUFFIXES)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (a tab, a newline, an ANSI escape) or a lone surrogate
    (a name from a file that is not UTF-8): a name that cannot be printed as it is."""
    return _CONTROL.search(text) is not None


def shown(text: str, limit: int = 200) -> str:
    """A name or a message from the file (a tensor's key, a record's name) as one printable line:
    what is not printable escaped as repr would (a tab, a newline, an ANSI escape), cut to ``limit``."""
    text = text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return _cut(text, limit)


def first_line(exc: Exception) -> str:
    """What torch.load said, in one line (its weights-only refusal is a page long)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Weights only load failed" in text:
        return "not a file of tensors that loads safely"
    return shown(text, 300)


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
        name = self.spec.get("name") if isinstance(self.spec, dict) else None
        return name if isinstance(name, str) else None

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


def _check_tensors(state: dict[str, Any], label: str) -> None:
    """Each tensor of a state_dict is a dense tensor of real numbers with data, as archc and torch.save
    write weights: a sparse, quantized or nested tensor, one on the meta device (no data) or of complex
    numbers loads into no layer (torch would fail, or drop the imaginary part); refused naming it. (A
    file's tensors are read to the CPU; a state_dict given by a caller may be on a GPU.)"""
    versions = getattr(state, "_metadata", None)     # torch.save keeps each module's version with a state_dict
    if versions is not None and not (isinstance(versions, dict) and all(
            isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool) or n is None
                                        for k, n in v.items() if k == "version") for v in versions.values())):
        raise BackendError([error(f"the versions of the layers in {label} (the state_dict's _metadata, which "
                                  "torch.save writes) are not whole numbers", "state_dict", Location(label),
                                  hint="torch.save writes them; the file was changed since, or written by "
                                       "another tool")])
    for key, value in state.items():
        what = ("a sparse tensor" if value.layout != _strided() else "a quantized tensor" if value.is_quantized
                else "a nested tensor" if value.is_nested else "a tensor without data (on the meta device)"
                if value.is_meta else f"a tensor of complex numbers ({value.dtype})" if value.is_complex() else None)
        if what is not None:
            raise BackendError([error(f"{shown(key)} in {label} is {what}", "state_dict", Location(label),
                                      hint="archc loads dense tensors of real numbers (floating-point weights, "
                                           "integer counters)")])


def _strided() -> Any:
    import torch

    return torch.strided


def _not_weights(label: str, what: str) -> BackendError:
    return BackendError([error(f"{label} holds no state_dict ({what})", "--weights", Location(label),
                               hint="archc reads torch.save files of tensors (a state_dict, or a dict holding one "
                                    "under 'state_dict') and .safetensors files")])


TAMPERED = "archc writes this field itself: the file was changed since, or written by another tool"


def refuse(label: str, key: str, why: str, hint: str | None = TAMPERED) -> BackendError:
    """A checkpoint's field ``key`` (``preprocess.size``) that archc does not take: the file and the field."""
    return BackendError([error(f"{key} in {label} {why}", key, Location(label), hint=hint)])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_tree(data: Any, label: str, key: str) -> None:
    """Plain data of bounded depth and size (the bounds of a YAML spec), walked without recursion."""
    todo, count = [(data, 1)], 1
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, (list, tuple)):
            children = list(value)
        else:
            continue
        if depth >= MAX_YAML_DEPTH and children:
            raise refuse(label, key, f"is nested more than {MAX_YAML_DEPTH} deep")
        count += len(children)
        if count > MAX_YAML_NODES:
            raise refuse(label, key, f"holds more than {MAX_YAML_NODES:,} values")
        todo.extend((child, depth + 1) for child in children)


def check_preprocess(data: Any, label: str, channels: int | None = None,
                     side: tuple[int, int] | None = None) -> dict[str, Any]:
    """A checkpoint's preprocessing, checked field by field (unknown fields, types, bounds; with
    ``channels`` and ``side``, the network's input: mean and std have one value per channel, the
    square ``size`` is the input's height and width), its defaults filled in; refused naming the file
    and the field."""
    if not isinstance(data, dict):
        raise refuse(label, "preprocess", "is not a mapping")
    unknown = [k for k in data if k not in PREPROCESS_FIELDS]
    if unknown:
        name = unknown[0] if isinstance(unknown[0], str) and len(unknown[0]) <= MAX_NAME_CHARS else "?"
        raise refuse(label, f"preprocess.{name}", f"is not a preprocessing field (they are: "
                     f"{', '.join(PREPROCESS_FIELDS)})")
    out: dict[str, Any] = {}
    for name, (kind, default) in PREPROCESS_FIELDS.items():
        key = f"preprocess.{name}"
        if name not in data:
            if default is None:
                raise refuse(label, key, "is missing")
            out[name] = default
            continue
        value = data[name]
        if kind == "side":
            if not _is_int(value) or not 1 <= value <= MAX_IMAGE_SIDE:
                shown = value if _is_int(value) and abs(value) < 10**12 else f"not a whole number ({type(value).__name__})"
                raise refuse(label, key, f"is {shown}: an image side is a whole number from 1 to {MAX_IMAGE_SIDE}")
        elif kind == "floats":
            if not isinstance(value, (list, tuple)) or len(value) not in (1, 3) \
                    or not all(_is_number(v) for v in value):
                size = f"{len(value):,} values" if isinstance(value, (list, tuple)) else type(value).__name__
                raise refuse(label, key, f"is not a list of 1 or 3 numbers, one per channel ({size})")
            if name == "std" and any(v == 0 for v in value):
                raise refuse(label, key, "holds a zero (images are divided by it)")
            value = [float(v) for v in value]
        elif kind == "interpolation":
            if value not in INTERPOLATIONS:
                raise refuse(label, key, f"is not one of {', '.join(INTERPOLATIONS)}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise refuse(label, key, "is not true or false")
        elif kind == "fraction" and (not _is_number(value) or not 0 < value <= 1):
            raise refuse(label, key, "is not a number above 0 and at most 1")
        out[name] = value
    if len(out["mean"]) != len(out["std"]):
        raise refuse(label, "preprocess.std", f"has {len(out['std'])} values but preprocess.mean has "
                     f"{len(out['mean'])}")
    if channels is not None and len(out["mean"]) != channels:
        raise refuse(label, "preprocess.mean", f"has {len(out['mean'])} values, but the network's input has "
                     f"{channels} channels (one value per channel)")
    if side is not None and (out["size"], out["size"]) != tuple(side):
        raise refuse(label, "preprocess.size", f"is {out['size']}, but the network takes {side[0]}x{side[1]} "
                     "images", hint=f"{TAMPERED}; or build the network for that size with --set input=[C,SIZE,SIZE]")
    return out


def check_classes(classes: list[str] | None, label: str, outputs: int) -> None:
    """The class names of a checkpoint, one per output of the network (two for one sigmoid unit)."""
    if classes is not None and len(classes) != outputs:
        raise refuse(label, "classes", f"names {len(classes):,} classes, but the network has {outputs:,} outputs")


def _checked(data: dict[str, Any], label: str) -> dict[str, Any]:
    """The fields archc reads from a checkpoint besides its tensors, each checked (types and bounds)."""
    out: dict[str, Any] = {}
    spec = data.get("spec")
    if spec is not None:
        if not isinstance(spec, dict):
            raise refuse(label, "spec", "is not a mapping")
        _check_tree(spec, label, "spec")
        name = spec.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
            raise refuse(label, "spec.name", f"is not a name (a string of at most {MAX_NAME_CHARS} characters)")
        out["spec"] = spec
    heads = data.get("heads")
    if heads is not None and not isinstance(heads, bool):
        raise refuse(label, "heads", "is not true or false")
    out["heads"] = heads
    spec_file = data.get("spec_file")
    if spec_file is not None and (not isinstance(spec_file, str) or len(spec_file) > MAX_PATH_CHARS):
        raise refuse(label, "spec_file", f"is not a file name (a string of at most {MAX_PATH_CHARS} characters)")
    out["spec_file"] = spec_file
    classes = data.get("classes")
    if classes is not None:
        if not isinstance(classes, (list, tuple)) or not 1 <= len(classes) <= MAX_CLASSES:
            raise refuse(label, "classes", f"is not a list of 1 to {MAX_CLASSES:,} class names")
        # (printed by archc predict: a name holding an ANSI escape or a newline would drive the terminal)
        if not all(isinstance(c, str) and 0 < len(c) <= MAX_CLASS_CHARS and not has_control(c) for c in classes):
            raise refuse(label, "classes", f"holds something other than names (strings of 1 to {MAX_CLASS_CHARS} "
                         "characters, none a control character)")
        if len(set(classes)) != len(classes):
            raise refuse(label, "classes", "names a class twice")
        out["classes"] = list(classes)
    if data.get("preprocess") is not None:
        out["preprocess"] = check_preprocess(data["preprocess"], label)
    epoch = data.get("epoch")
    if epoch is not None and (not _is_int(epoch) or not 0 <= epoch <= 2**31):
        raise refuse(label, "epoch", "is not a whole number of epochs")
    return out


def from_payload(data: Any, label: str) -> ModelFile:
    """A :class:`ModelFile` from what a ``.pt`` file (or a caller) holds; what it holds besides the
    tensors (spec, class names, preprocessing, ...) is checked first, and refused naming the field."""
    if _is_state_dict(data):
        _check_tensors(data, label)
        return ModelFile(label, data)
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise _not_weights(label, "not a mapping of names to tensors")
    if not _is_state_dict(data["state_dict"]):
        raise _not_weights(label, "its 'state_dict' is not a mapping of names to tensors")
    _check_tensors(data["state_dict"], label)
    known = _checked(data, label)
    rest = {k: v for k, v in data.items()
            if k not in ("state_dict", "spec", "spec_file", "heads", "classes", "preprocess")}
    return ModelFile(label, data["state_dict"], spec=known.get("spec"), spec_file=known["spec_file"],
                     heads=known["heads"], classes=known.get("classes"), preprocess=known.get("preprocess"),
                     extra=rest)


def _check_archive(path: Path, label: str, what: str) -> None:
    """Refuse, before torch reads it, a zip archive (torch.save's format) whose records declare more
    bytes than the file can honestly hold: torch.save stores records uncompressed, so their sizes add
    up to about the file's; a compressed record that inflates far beyond (a zip bomb) is refused
    unread. (torch's reader, miniz, inflates a record into a buffer of the size it declares, never
    more, so a record that lies about its size cannot inflate past it.) Files in torch's legacy
    format (not zip archives) are left to torch."""
    import zipfile

    hint = "torch.save writes its records uncompressed; this file was changed or written by another tool"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":      # torch's own test of its zip format
                return
            # the end-of-archive record says how many records there are, before they are read
            end = getattr(zipfile, "_EndRecData", lambda f: None)(f)
        records = end[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)] if end else 0
        if records > MAX_RECORDS:
            raise BackendError([error(f"{label} is a zip archive of {records:,} records, more than the "
                                      f"{MAX_RECORDS:,} a checkpoint may hold", what, Location(label), hint=hint)])
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError([error(f"cannot read {label} as a zip archive: {first_line(exc)}", what,
                                  Location(label), hint=hint)]) from None
    limit = max(MAX_INFLATED_BYTES, INFLATE_RATIO * size)
    declared = sum(info.file_size for info in infos)
    if declared > limit:
        big = max(infos, key=lambda info: info.file_size)
        mib = 1024 * 1024
        raise BackendError([error(
            f"{label} declares {declared / mib:,.0f} MiB of data in {len(infos):,} records (the largest, "
            f"{big.file_size / mib:,.0f} MiB{', compressed' if big.compress_type != zipfile.ZIP_STORED else ''}), "
            f"more than {limit / mib:,.0f} MiB for a file of {size / mib:,.1f} MiB; refused unread "
            "(a zip bomb?)", what, Location(label), hint=hint)])


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
    if Path(source).is_file():
        _check_archive(Path(source), label, what)
    import torch

    try:
        with warnings.catch_warnings():     # torch's notes on what it rebuilds (a sparse tensor is "in beta")
            warnings.simplefilter("ignore")
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
    if meta.get("format") != SAFETENSORS_FORMAT:
        _check_tensors(state, label)
        return ModelFile(label, state)  # weights from elsewhere: no archc metadata
    fields = {}
    for key in ("spec", "spec_file", "heads", "classes", "preprocess", "epoch"):
        if key not in meta:
            continue
        if len(meta[key]) > MAX_METADATA_CHARS:
            raise refuse(label, key, f"is {len(meta[key]):,} characters of metadata, more than {MAX_METADATA_CHARS:,}")
        try:
            fields[key] = json.loads(meta[key])
        except RecursionError:
            raise refuse(label, key, f"is nested more than {MAX_YAML_DEPTH} deep") from None
        except (ValueError, MemoryError):
            raise refuse(label, key, "is not valid JSON") from None
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


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
