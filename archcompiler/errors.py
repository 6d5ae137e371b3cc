"""Located diagnostics: every problem archc reports is a value with a place in a file.

A :class:`Diagnostic` names the file, line and column, the logical path of the value
(``layers.inception_4b.5x5_reduce``), the offending value and a hint.  :class:`SpecError`
carries all diagnostics found in one go, so a user sees every error in a file at once.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Location:
    """A place in a source: a file (or ``<string>``, ``--set ...``) and a 1-based line and column."""

    file: str = "<string>"
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file


NOWHERE = Location("<unknown>")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")     # a tab and a newline too: a message is one line


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``): a name from an untrusted file
    (an ONNX node, a spec's key) never drives the terminal it is printed to."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass(frozen=True)
class Diagnostic:
    """One problem (or, with ``severity='warning'``, one remark) at one place."""

    message: str
    path: str = ""
    location: Location = NOWHERE
    hint: str | None = None
    value: Any = None
    severity: str = "error"

    @property
    def file(self) -> str:
        return self.location.file

    @property
    def line(self) -> int:
        return self.location.line

    @property
    def column(self) -> int:
        return self.location.column

    def format(self) -> str:
        where = f"{self.location}: " if self.location is not NOWHERE else ""
        what = f"{self.path}: " if self.path else ""
        kind = "" if self.severity == "error" else f"{self.severity}: "
        hint = f" ({self.hint})" if self.hint else ""
        return printable(f"{where}{kind}{what}{self.message}{hint}")

    def to_json(self) -> dict[str, Any]:
        data = {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }
        if self.value is not None:
            try:
                json.dumps(self.value)
                data["value"] = self.value
            except (TypeError, ValueError):
                data["value"] = repr(self.value)
        return data

    def at(self, location: Location) -> Diagnostic:
        return replace(self, location=location)

    def __str__(self) -> str:
        return self.format()


class ArchcError(Exception):
    """Base class of every error archc raises on purpose for bad input."""

    def __init__(self, errors: list[Diagnostic]):
        self.errors = list(errors)
        super().__init__("\n".join(d.format() for d in self.errors))


class SpecError(ArchcError):
    """A spec (or an override of it) is invalid; ``.errors`` lists every located problem."""


class GraphError(ArchcError):
    """The spec is well-formed but the network it describes is not (shapes, references)."""


class RunError(ArchcError):
    """A run (training, evaluation, prediction) cannot go on for what it meets, not for its spec: the
    machine (no CUDA device, a package missing), the data (an empty folder, unreadable images, classes
    that do not fit) or a run folder to resume."""


class BackendError(ArchcError):
    """A backend could not do what was asked (missing tool, weights that do not fit, ...)."""


def error(message: str, path: str = "", location: Location = NOWHERE, hint: str | None = None,
          value: Any = None) -> Diagnostic:
    return Diagnostic(message=message, path=path, location=location, hint=hint, value=value)


def warning(message: str, path: str = "", location: Location = NOWHERE, hint: str | None = None,
            value: Any = None) -> Diagnostic:
    return Diagnostic(message=message, path=path, location=location, hint=hint, value=value,
                      severity="warning")


__all__ = ["Location", "NOWHERE", "Diagnostic", "ArchcError", "SpecError", "GraphError",
           "BackendError", "error", "warning", "printable"]


# ----------------------------------------------------------------------------- a full disk

FULL_BYTES = 1024 * 1024        # a write that failed with less than this left: the file system is full


def disk_full(exc: BaseException, folder: str | Path | None = None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the file system is full: ENOSPC or
    EDQUOT, or any write error in ``folder`` while less than :data:`FULL_BYTES` are left there (torch's
    writer says "unexpected pos", graphviz's ``dot`` exits 1)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    if folder is None:
        return False
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_BYTES
