"""A published file fetched once into torch's hub cache (``$TORCH_HOME/hub/checkpoints/FILE``, where torch.hub and
torchvision keep it too): hash checked, written atomically, resumed after an interruption, one process at a time,
with progress; offline, a missing file is said with what to do."""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BackendError, Location, error
from ..io import write_text
from ..util import mib, progress_seconds
from .table import CHUNK, SAFE_FILE, Entry

TIMEOUT_S = 30.0                            # connecting, and each read of the download
PROGRESS_SECONDS = 5.0                      # between two plain progress lines (stderr not a terminal)
MAX_UNKNOWN_BYTES = 8 << 30                 # a URL's file without Content-Length, and not in the table
ATTEMPTS = 3                                # a download cut off after some progress is resumed, this many tries
VERIFIED = ".archc-sha256.json"             # in the cache folder: FILE -> size, mtime, sha256 already computed
# torch.hub's convention: name-<the first 8 or more hex digits of the sha256>.ext
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


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

    from ..version import __version__

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
