"""Writing outputs safely.

- Atomically: a file is replaced only by a complete new one. The temporary file beside it is removed
  on failure and on Ctrl-C (and SIGTERM, which the CLI turns into Ctrl-C); one left by a process that
  was killed outright (SIGKILL) is removed by the next write to the same file.
- Never over an input: an output path that is one of the command's inputs is refused.
- Never half-written on a full disk: a write that fails because the file system is full (an
  ``OSError`` ENOSPC, or torch's zip writer's "unexpected pos") is reported as "no space left on
  ...", exit 1, the temporary file removed.
- Never over a file archc did not write when the user gave no name: a default output name that is
  taken by somebody else's file is refused (``--force`` replaces it).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BackendError, Location, disk_full, error

TEMP_TAG = ".archc-"
MARKER = b"archc"      # every text file archc writes names itself; model files hold an 'archc' key


def _refuse(path: Path, message: str, hint: str | None = None) -> BackendError:
    return BackendError([error(message, "output", Location(str(path)), hint=hint)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporary files that a killed archc process left beside ``path``."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}{re.escape(TEMP_TAG)}(\d+)-.*\.tmp$")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on
    failure (or Ctrl-C) it is removed and ``path`` is left as it was."""
    path = Path(path)
    if path.is_dir():
        raise _refuse(path, f"{path} is a folder", hint="give a file name, e.g. -o " + str(path / "out"))
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise _refuse(path, f"cannot write {path}: {above} is a file, not a folder",
                      hint="give a path inside a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_TAG}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _refuse(path, f"cannot write {path}: {exc.strerror or exc}",
                      hint="check that the folder exists and is writable") from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except Exception as exc:
            if disk_full(exc, path.parent):
                raise no_space(path) from None
            raise
        os.chmod(tmp, _mode(path))
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _refuse(path, f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def no_space(path: str | Path) -> BackendError:
    return _refuse(Path(path), f"no space left on the device that holds {Path(path).parent}",
                   hint="free some space or write elsewhere; nothing was written")


def _mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual ones (0666 less umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:             # none there yet (or a link that leads nowhere, which os.replace replaces)
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def refuse_inputs(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """An output never replaces one of the command's inputs (``-o`` naming the spec itself)."""
    out = Path(output)
    for src in inputs:
        src_path = Path(src)
        try:
            same = out.exists() and src_path.exists() and os.path.samefile(out, src_path)
        except OSError:
            same = False
        try:
            same = same or out.resolve() == src_path.resolve()
        except (OSError, RuntimeError):         # a symbolic link loop: compared as written
            same = same or os.path.abspath(out) == os.path.abspath(src_path)
        if same:
            raise _refuse(out, f"{out} is an input of this command; archc will not write over it",
                          hint="choose another output name with -o")


def written_by_archc(path: Path) -> bool:
    """Whether an existing file carries archc's marker in its first 64 KiB."""
    try:
        with open(path, "rb") as f:
            return MARKER in f.read(65536)
    except OSError:
        return False


def check_default_output(path: Path, force: bool) -> None:
    """A default output name (one the user did not give) replaces only a file archc wrote."""
    if force or not path.exists():
        return
    if path.is_dir():
        raise _refuse(path, f"{path} is a folder", hint="name the output with -o FILE")
    if not written_by_archc(path):
        raise _refuse(path, f"{path} exists and was not written by archc; not replacing it",
                      hint="name another output with -o FILE, or pass --force to replace it")


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
