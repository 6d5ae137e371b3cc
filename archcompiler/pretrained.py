"""Pretrained weights by name: torchvision's published files, fetched into torch's hub cache.

``archcompiler/data/pretrained.json`` holds torchvision's facts for every builder (its weights'
names, file, URL, sha256 prefix, preprocessing, category names and the builder's overrides), so
archc needs neither torchvision nor a network to know them. ``archc predict resnet50 --pretrained
cat.jpg`` looks the default weights up (:func:`weights_entry`), fetches the file once
(:func:`fetch`: ``$TORCH_HOME/hub/checkpoints/FILE``, where torch.hub and torchvision keep it too,
hash checked, written atomically, resumed after an interruption) and uses the weights' recipe: its
preprocessing and category names. :func:`resolve` is what every command calls: it turns
``--pretrained`` / ``--weights NAME|URL`` into a file and the ``--set`` values the weights need.

No torch here at import (only :attr:`Entry.preprocess` builds archc's ``Preprocess``, which
imports it), and never torchvision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BackendError, Location, SpecError, error
from .io import write_text
from .util import mib, progress_seconds

TABLE = Path(__file__).resolve().parent / "data" / "pretrained.json"
TABLE_ENV = "ARCHC_PRETRAINED_TABLE"        # another table (tests): read at each call
TIMEOUT_S = 30.0                            # connecting, and each read of the download
CHUNK = 1 << 20
PROGRESS_SECONDS = 5.0                      # between two plain progress lines (stderr not a terminal)
MAX_UNKNOWN_BYTES = 8 << 30                 # a URL's file without Content-Length, and not in the table
ATTEMPTS = 3                                # a download cut off after some progress is resumed, this many tries
VERIFIED = ".archc-sha256.json"             # in the cache folder: FILE -> size, mtime, sha256 already computed
# torch.hub's convention: name-<the first 8 or more hex digits of the sha256>.ext
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
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
        from .training.data import Preprocess

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
    from .modelfile import check_preprocess

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
        from .spec import zoo

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


# ----------------------------------------------------------------------------- the cache

def hub_dir() -> Path:
    """torch.hub's folder, as ``torch.hub.get_dir()`` computes it (without importing torch):
    ``$TORCH_HOME/hub``, TORCH_HOME defaulting to ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(home)) / "hub"


def cache_dir() -> Path:
    """Where torch.hub (and torchvision) keep downloaded weights: ``hub_dir()/checkpoints``."""
    return hub_dir() / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _known_hashes(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path) -> str:
    """The sha256 of a file of the cache, computed once per version of the file (size and mtime):
    the digest is remembered in the folder's ``.archc-sha256.json``."""
    st = path.stat()
    known = _known_hashes(path.parent).get(path.name)
    if isinstance(known, dict) and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = _sha256(path)
    _remember(path, digest)
    return digest


def _remember(path: Path, digest: str) -> None:
    st = path.stat()
    with contextlib.suppress(OSError, BackendError):     # a folder we cannot write: computed again next time
        data = _known_hashes(path.parent)
        data[path.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        write_text(path.parent / VERIFIED, json.dumps(data, indent=1))


def hash_from_name(file: str) -> str | None:
    """The sha256 prefix in a file name of torch.hub's convention (``name-0676ba61.pth``), if any."""
    m = HASH_IN_NAME.search(file)
    return m.group(1) if m else None


def _offline(file: str, url: str, folder: Path, why: str) -> BackendError:
    return BackendError([error(f"cannot download {file} from {url}: {why}", "weights", Location(str(folder / file)),
                               hint=f"no network? download it elsewhere and place it in {folder} (torch's hub "
                                    f"cache, $TORCH_HOME/hub/checkpoints) as {file}: archc then uses it without "
                                    "a network")])


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One download of a file at a time (another archc process waits for it, then uses its file);
    the lock file is removed when done."""
    try:
        import fcntl
    except ImportError:                 # not POSIX: no lock
        yield
        return
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"archc: waiting for another process downloading {path.name[:-5]}", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(entry_or_url: Entry | str, *, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """The weights file in torch's hub cache (``cache_dir()/FILE``), downloaded first when it is not
    there: with a progress bar on stderr, into ``FILE.partial`` (resumed with an HTTP Range request
    when one is left from before), its sha256 prefix checked, then moved into place in one step. A
    file already in the cache is used without a network (its hash checked once). A URL's hash prefix
    is the one in its file name (``name-<hex>.ext``), if it has one."""
    if isinstance(entry_or_url, Entry):
        url, file, expected, limit = entry_or_url.url, entry_or_url.file, entry_or_url.sha256, entry_or_url.max_bytes
    else:
        url = entry_or_url
        parts = urllib.parse.urlsplit(url)
        file = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BackendError([error(f"{url} is not an http(s) URL", "--weights", Location(url))])
        if not SAFE_FILE.match(file) or ".." in file:
            raise BackendError([error(f"{url} does not end in a file name archc can keep (letters, digits, "
                                      "'.', '_', '-')", "--weights", Location(url))])
        expected, limit = hash_from_name(file), None
    folder = cache_dir()
    dest = folder / file
    if dest.is_file():
        _check_hash(dest, expected, url, remove=False)
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError([error(f"cannot create torch's hub cache {folder}: {exc.strerror or exc}", "weights",
                                  Location(str(folder)), hint="set TORCH_HOME to a folder you can write")]) from None
    with _lock(folder / f"{file}.lock"):
        if dest.is_file():              # another process downloaded it meanwhile
            _check_hash(dest, expected, url, remove=False)
            return dest
        partial = folder / f"{file}.partial"
        _download(url, partial, file, folder, limit, progress, timeout)
        digest = _check_hash(partial, expected, url, remove=True)
        os.replace(partial, dest)
        _remember(dest, digest)
    if expected is None and progress:
        print(f"archc: {file} has no sha256 prefix in its name (name-<hex>.ext): not checked", file=sys.stderr)
    return dest


def _check_hash(path: Path, expected: str | None, url: str, remove: bool) -> str:
    """The file's sha256, when it begins with ``expected`` (or nothing is expected); otherwise an
    error (and, for a download, ``remove``: the file removed)."""
    actual = file_sha256(path) if not remove else _sha256(path)
    if expected is None or actual.startswith(expected):
        return actual
    if remove:
        path.unlink(missing_ok=True)
        raise BackendError([error(f"the file downloaded from {url} is not the published one: its sha256 begins "
                                  f"{actual[:len(expected)]}, not {expected}; removed", "weights", Location(url),
                                  hint="run again to download it afresh (a proxy or a cut-off download may have "
                                       "changed it)")])
    raise BackendError([error(f"{path} is not the published file: its sha256 begins {actual[:len(expected)]}, "
                              f"not {expected}", "weights", Location(str(path)),
                              hint=f"remove it to download it again, or place the file from {url} there")])


class _Progress:
    """A tqdm bar on a terminal; elsewhere a plain line every few seconds, and one at the end."""

    def __init__(self, enabled: bool, file: str, start: int, total: int | None):
        self.enabled, self.file, self.done, self.total = enabled, file, start, total
        self.began = self.last = time.monotonic()
        self.first = start
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=file,
                            file=sys.stderr, dynamic_ncols=True, leave=False)
        self.every = progress_seconds(PROGRESS_SECONDS)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(f"archc: {self.file}: {self.line()}", file=sys.stderr, flush=True)

    def line(self) -> str:
        of = f" of {mib(self.total)} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = (self.done - self.first) / max(time.monotonic() - self.began, 1e-9)
        return f"{mib(self.done)}{of}, {mib(rate)}/s"

    def close(self, done: bool) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled and done:
            print(f"archc: downloaded {self.file} ({mib(self.done)} in {time.monotonic() - self.began:.1f} s)",
                  file=sys.stderr, flush=True)


class _CutOff(Exception):
    """The connection ended before the whole file came (``got``: the bytes this try received)."""

    def __init__(self, message: str, got: int):
        super().__init__(message)
        self.got = got


def _download(url: str, partial: Path, file: str, folder: Path, limit: int | None, progress: bool,
              timeout: float) -> None:
    """``url`` into ``partial``, resuming what it holds; a connection cut off after some progress is
    resumed (``ATTEMPTS`` tries in all); offline, an error naming the file, the URL and the folder."""
    import http.client

    from .version import __version__

    if progress:
        print(f"archc: downloading {url} to {partial.parent / file}", file=sys.stderr, flush=True)
    attempt = 0
    while True:
        attempt += 1
        start = partial.stat().st_size if partial.is_file() else 0
        request = urllib.request.Request(url, headers={"User-Agent": f"archc/{__version__}"})
        if start:
            request.add_header("Range", f"bytes={start}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start and attempt < ATTEMPTS:   # the partial file is whole, or longer: again
                partial.unlink(missing_ok=True)
                continue
            raise _offline(file, url, folder, f"HTTP {exc.code} {exc.reason}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:   # no network, refused, timed out, TLS
            reason = getattr(exc, "reason", None) or exc
            raise _offline(file, url, folder, str(reason) or type(exc).__name__) from None
        try:
            with response:
                _receive(response, partial, file, start, limit, url, progress)
            return
        except _CutOff as exc:
            kept = partial.stat().st_size if partial.is_file() else 0
            if exc.got == 0 or attempt >= ATTEMPTS:
                raise _offline(file, url, folder, f"{exc} ({mib(kept)} kept in {partial.name}: running again "
                               "resumes)") from None
            if progress:
                print(f"archc: {exc}; resuming", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            if partial.is_file() and progress:
                print(f"\narchc: {mib(partial.stat().st_size)} of {file} kept in {partial}: running again resumes",
                      file=sys.stderr, flush=True)
            raise


def _receive(response: Any, partial: Path, file: str, start: int, limit: int | None, url: str,
             progress: bool) -> None:
    """The body of ``response`` into ``partial`` (appended when the server resumed at ``start``,
    from zero when it ignored the Range request). Raises :class:`_CutOff` when fewer bytes came
    than announced, or the connection failed on the way."""
    import http.client

    status = getattr(response, "status", 200)
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.strip().isdigit() else None
    resumed = bool(start) and status == 206 and _range_start(response.headers.get("Content-Range")) == start
    if not resumed:
        start = 0
    total = start + length if length is not None else None
    bound = limit or MAX_UNKNOWN_BYTES
    if total is not None and total > bound:
        raise BackendError([error(f"{url} announces {mib(total)}, more than the {mib(bound)} expected of {file}",
                                  "weights", Location(url))])
    show = _Progress(progress, file, start, total)
    got, done = 0, False
    try:
        with open(partial, "ab" if resumed else "wb") as f:
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:   # reset, timed out, incomplete
                    raise _CutOff(f"the download of {file} was cut off after {mib(start + got)}", got) from exc
                if not block:
                    break
                got += len(block)
                if start + got > bound:
                    f.close()
                    partial.unlink(missing_ok=True)
                    raise BackendError([error(f"{url} sent more than the {mib(bound)} expected of {file}; "
                                              "stopped", "weights", Location(url))])
                f.write(block)
                show.update(len(block))
        if total is not None and start + got < total:
            raise _CutOff(f"the download of {file} was cut off after {mib(start + got)} of {mib(total)}", got)
        done = True
    finally:
        show.close(done)


def _range_start(header: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-", header or "")
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------- commands

def is_url(text: Any) -> bool:
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def is_weights_name(text: Any) -> bool:
    """Whether ``--weights`` was given a name of published weights (``IMAGENET1K_V1``, ``DEFAULT``,
    ``googlenet.IMAGENET1K_V1``, torchvision's ``GoogLeNet_Weights.IMAGENET1K_V1``), not a file."""
    return isinstance(text, str) and bool(NAME.match(text)) and not Path(text).exists()


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
    from .modelfile import read_weights

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
    from .modelfile import is_model_file
    from .spec import load_spec

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
