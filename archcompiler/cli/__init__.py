"""The ``archc`` command line: a thin layer over the public API.

Exit codes: 0 success, 1 invalid input or a failed check, 2 usage error.  Errors are printed as
``file:line:col: path: message (hint)``; a Python traceback is never shown for bad input
(set ARCHC_DEBUG=1 to see one for an internal error).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable

from ..errors import ArchcError
from ..util import paused_gc
from . import build, check, diff, draw, flops, resolve, schema, validate

COMMANDS = [validate, flops, check, build, draw, resolve, diff, schema]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="archc", description="Compile architecture specs (YAML, written like a paper's table) into "
        "analyses, PyTorch modules and diagrams.",
        epilog="Run 'archc COMMAND --help' for a command's options.")
    from .. import __version__
    p.add_argument("--version", action="version", version=f"archc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return p


def add_set(p: argparse.ArgumentParser, flag: str = "--set", dest: str = "set", what: str = "") -> None:
    p.add_argument(flag, dest=dest, action="append", default=[], metavar="PATH=VALUE",
                   help=f"override a value{what}: a parameter (num_classes=2), a layer field "
                        "(conv1.out=32), a table cell (inception_4b.5x5=96) or a key path "
                        "(outputs.main.loss=binary_cross_entropy); repeatable")


def print_errors(exc: ArchcError, fmt: str = "text") -> None:
    if fmt == "json":
        print(json.dumps({"ok": False, "errors": [d.to_json() for d in exc.errors]}, indent=2))
    else:
        for d in exc.errors:
            print(d.format(), file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)     # `kill` cleans up like Ctrl-C: no temporary files left
    try:
        with paused_gc():
            return run(args)
    except ArchcError as exc:
        print_errors(exc, getattr(args, "format", "text"))
        return 1
    except KeyboardInterrupt:
        print("archc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an internal error: say so plainly, without a traceback
        if os.environ.get("ARCHC_DEBUG"):
            raise
        print(f"archc: internal error: {type(exc).__name__}: {exc}\n"
              "This is a bug in archc, not in your spec. Run again with ARCHC_DEBUG=1 to see the "
              "traceback, and please report it.", file=sys.stderr)
        return 3
