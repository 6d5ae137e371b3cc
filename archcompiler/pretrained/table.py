"""The table of torchvision's published weights (``archcompiler/data/pretrained.json``, or ``ARCHC_PRETRAINED_TABLE``):
per builder its weights' names, file, URL, sha256 prefix, preprocessing, category names and overrides, read as
untrusted data; :func:`weights_entry` looks one up."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendError, Location, error

TABLE = Path(__file__).resolve().parents[1] / "data" / "pretrained.json"
TABLE_ENV = "ARCHC_PRETRAINED_TABLE"        # another table (tests): read at each call
CHUNK = 1 << 20
NAME = re.compile(r"^(?:(?P<builder>[A-Za-z][A-Za-z0-9_]*)\.)?(?P<name>DEFAULT|[A-Z][A-Z0-9_]*)$")
SAFE_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$")
# torchvision's builder arguments when weights are given, and what archc does about each
HANDLED = {"transform_input", "aux_logits", "init_weights", "num_classes", "image_size"}
# what torchvision's modules do to the keys of checkpoints saved by older versions of themselves, as
# they load (the table's load_notes): DenseNet's norm.1 -> norm1, ViT's MLPBlock linear_1/2 -> 0/3
OLD_KEYS = [(re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                        r"((?:[12])\.(?:weight|bias|running_mean|running_var))$"), r"\1\2"),
            (re.compile(r"^(.*\.mlp\.)linear_1\."), r"\g<1>0."),
            (re.compile(r"^(.*\.mlp\.)linear_2\."), r"\g<1>3.")]


# ----------------------------------------------------------------------------- the table

def table_path() -> Path:
    return Path(os.environ.get(TABLE_ENV) or TABLE)


_TABLES: dict[tuple[str, int, int], dict[str, Any]] = {}


def load_table(path: str | Path | None = None) -> dict[str, Any]:
    """The table (``{"categories": {...}, "builders": {...}}``), read once per file version."""
    path = Path(path) if path is not None else table_path()
    where = Location(str(path))
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in _TABLES:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("builders"), dict):
                raise ValueError("no 'builders' mapping")
            _TABLES.clear()
            _TABLES[key] = data
        return _TABLES[key]
    except FileNotFoundError:
        raise BackendError([error(f"archc's table of pretrained weights is missing: {path}", "--pretrained", where,
                                  hint=f"reinstall archc, or point {TABLE_ENV} at the table")]) from None
    except (OSError, ValueError) as exc:
        raise BackendError([error(f"cannot read the table of pretrained weights {path}: {exc}", "--pretrained",
                                  where)]) from None


@dataclass(frozen=True)
class Entry:
    """One published set of weights of one builder: where the file is, and its recipe."""

    builder: str
    name: str                                   # IMAGENET1K_V1
    url: str
    file: str                                   # resnet50-0676ba61.pth
    sha256: str                                 # a prefix of the file's sha256 (hex)
    transforms: dict[str, Any]                  # resize, crop, interpolation, mean, std
    categories: list[str] | None
    overrides: dict[str, Any] = field(default_factory=dict)   # torchvision's builder arguments for them
    meta: dict[str, Any] = field(default_factory=dict)        # num_params, acc1, acc5, gflops, file_size_mb, ...

    @property
    def label(self) -> str:
        return f"{self.builder} {self.name}"

    @property
    def max_bytes(self) -> int | None:
        """The most bytes a download of the file may take: its size in the table (MiB) x 1.5."""
        size = self.meta.get("file_size_mb")
        return int(size * 1.5 * 2**20) + CHUNK if _number(size) and size > 0 else None

    @property
    def normalisation(self) -> tuple[list[float], list[float]]:
        """The mean and std to normalise images with, as archc's network (which has no
        ``transform_input``) needs them: torchvision's GoogLeNet and Inception-v3 weights re-normalise
        ImageNet-normalised input to ``(x - 0.5) / 0.5`` inside the model, which is the same as
        normalising with mean 0.5 and std 0.5 in the first place."""
        if self.overrides.get("transform_input"):
            return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
        return list(self.transforms["mean"]), list(self.transforms["std"])

    def preprocess_dict(self, side: int | None = None) -> dict[str, Any]:
        """archc's preprocessing (the fields of ``Preprocess``) of these weights; with ``side``, for a
        network that takes ``side x side`` images (the resize scaled alike)."""
        crop, resize = self.transforms["crop"], self.transforms["resize"]
        if side is not None and side != crop:
            crop, resize = side, max(side, round(side * resize / crop))
        mean, std = self.normalisation
        return {"size": crop, "resize": resize, "mean": mean, "std": std,
                "interpolation": self.transforms["interpolation"], "random_resized_crop": True, "min_scale": 0.08,
                "horizontal_flip": True}

    @property
    def preprocess(self) -> Any:
        """The weights' preprocessing as archc's :class:`~archcompiler.training.data.Preprocess`."""
        from ..training.data import Preprocess

        return Preprocess.from_dict(self.preprocess_dict(), f"{table_path()} ({self.label})")

    def data_overrides(self, side: int | None = None) -> list[str]:
        """The spec's ``data:`` section for these weights, as ``--set`` values."""
        p = self.preprocess_dict(side)
        return [f"data.resize={p['resize']}", f"data.crop={p['size']}", f"data.mean={json.dumps(p['mean'])}",
                f"data.std={json.dumps(p['std'])}", f"data.interpolation={p['interpolation']}"]

    @property
    def model_note(self) -> str | None:
        """What a user of the module built with these weights must know (torchvision's model differs)."""
        if not self.overrides.get("transform_input"):
            return None
        return (f"torchvision's {self.builder} with these weights re-normalises its input inside the model "
                "(transform_input=True); archc's network does not, so its images are normalised with mean "
                "[0.5, 0.5, 0.5] and std [0.5, 0.5, 0.5] instead of ImageNet's (the same result): archc "
                "predict, evaluate and train do so; feed the module images normalised that way")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry(table: dict[str, Any], builder: str, name: str, raw: Any, where: Location) -> Entry:
    """An entry of the table, checked: the file name, URL, hash and transforms are used as given."""
    key = f"builders.{builder}.weights.{name}"

    def bad(what: str) -> BackendError:
        return BackendError([error(f"{key} in the table of pretrained weights {what}", key, where)])

    if not isinstance(raw, dict):
        raise bad("is not a mapping")
    url, file, sha = raw.get("url"), raw.get("file"), raw.get("sha256")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise bad("has no http(s) url")
    if not isinstance(file, str) or not SAFE_FILE.match(file) or ".." in file:
        raise bad("has no plain file name")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{6,64}", sha):
        raise bad("has no sha256 prefix (6 to 64 hex digits)")
    t = raw.get("transforms")
    if not isinstance(t, dict) or not all(k in t for k in ("resize", "crop", "mean", "std")):
        raise bad("has no transforms (resize, crop, mean, std)")
    t = {"interpolation": "bilinear", **t}
    if isinstance(t["resize"], list) and len(t["resize"]) == 1:      # torchvision writes [256] for some
        t["resize"] = t["resize"][0]
    from ..modelfile import check_preprocess

    check_preprocess({"size": t["crop"], "resize": t["resize"], "mean": t["mean"], "std": t["std"],
                      "interpolation": t["interpolation"]}, f"{where.file} ({key}.transforms)")
    categories = raw.get("categories")
    if isinstance(categories, str):
        categories = (table.get("categories") or {}).get(categories)
        if categories is None:
            raise bad(f"names categories {raw.get('categories')!r}, which the table's 'categories' lacks")
    if categories is not None and (not isinstance(categories, list) or not all(isinstance(c, str) for c in categories)):
        raise bad("has categories that are not a list of names")
    overrides = {**((table["builders"][builder] or {}).get("overrides") or {}), **(raw.get("overrides") or {})}
    meta = {k: v for k, v in raw.items() if k not in ("url", "file", "sha256", "transforms", "categories", "overrides")}
    return Entry(builder, name, url, file, sha, t, categories, dict(overrides), meta)


def available(builder: str) -> list[str]:
    """The names of the weights published for ``builder`` (empty: none, or not a builder)."""
    b = load_table()["builders"].get(builder)
    return list((b or {}).get("weights") or {})


def weights_entry(builder: str, name: str | None = None) -> Entry:
    """The weights called ``name`` of ``builder`` (``None`` or ``"DEFAULT"``: torchvision's default
    for it). An unknown builder or name is an error listing what there is."""
    table = load_table()
    where = Location(str(table_path()))
    b = table["builders"].get(builder)
    if not isinstance(b, dict) or not b.get("weights"):
        from ..spec import zoo

        known = [n for n in table["builders"] if (table["builders"][n] or {}).get("weights")]
        close = [n for n in known if n.startswith(builder.split("_")[0].rstrip("0123456789"))][:8] if builder else []
        if builder in zoo.builders() and builder in table["builders"]:
            why = f"torchvision publishes no weights for {builder}"
        elif builder in zoo.builders():     # the table holds the classification builders' weights (issue #33)
            why = (f"archc's table of torchvision's weights has no entry for {builder} yet (it holds the "
                   "classification builders'); a checkpoint of its own layout loads with --weights FILE")
        else:
            why = f"{builder} is not one of torchvision's builders, which the published weights are for"
        hint = (f"weights exist for {', '.join(close)}: give the builder's name as SPEC (--set for the rest, e.g. "
                f"--set num_classes=2), or --weights {close[0]}.DEFAULT for a spec laid out as it is" if close else
                "archc zoo lists the builders; a spec laid out as one of them takes its weights with --weights "
                "BUILDER.DEFAULT")
        raise BackendError([error(f"no pretrained weights for {builder}: {why}", "--pretrained", where, hint=hint)])
    weights = b["weights"]
    if name is None or name == "DEFAULT":
        name = b.get("default") or next(iter(weights))
        if name not in weights:
            raise BackendError([error(f"the default weights of {builder}, {name}, are not in the table", "--pretrained",
                                      where)])
    if name not in weights:
        raise BackendError([error(f"{builder} has no weights called {name}", "--weights", where,
                                  hint=f"its weights: {', '.join(weights)}; DEFAULT is {b.get('default')}")])
    return _entry(table, builder, name, weights[name], where)


# ----------------------------------------------------------------------------- commands

def is_url(text: Any) -> bool:
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def is_weights_name(text: Any) -> bool:
    """Whether ``--weights`` was given a name of published weights (``IMAGENET1K_V1``, ``DEFAULT``,
    ``googlenet.IMAGENET1K_V1``, torchvision's ``GoogLeNet_Weights.IMAGENET1K_V1``), not a file."""
    return isinstance(text, str) and bool(NAME.match(text)) and not Path(text).exists()
