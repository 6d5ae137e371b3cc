"""The ``archc`` command line: a thin layer over the public API.

Exit codes: 0 success, 1 invalid input or a failed check, 2 usage error.  Errors are printed as
``file:line:col: path: message (hint)``; a Python traceback is never shown for bad input
(set ARCHC_DEBUG=1 to see one for an internal error).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable

from ..errors import ArchcError, printable
from .common import EXAMPLES, EXIT_CODES, NEEDS_IMAGES, TOP_EXAMPLES, print_errors

# the commands, in the order `archc --help` lists them, and the module here that defines each
COMMANDS = {name: name for name in ["validate", "flops", "check", "build", "draw", "resolve", "diff", "schema", "ops"]} | \
    {"import": "importing"} | \
    {name: name for name in ["train", "evaluate", "predict", "calibrate", "profile", "report", "sweep", "zoo"]}


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """archc's argument parser: with every command (for ``archc --help``), or with ``command`` alone,
    which is all that running it needs (the other commands' modules are then not even imported)."""
    p = argparse.ArgumentParser(
        prog="archc", description="Compile architecture specs (YAML, written like a paper's table) into "
        "analyses, PyTorch modules and diagrams.",
        epilog=f"examples:\n{TOP_EXAMPLES}\n\nRun 'archc COMMAND --help' for a command's options and examples.\n"
               f"{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from ..api import __version__
    p.add_argument("--version", action="version", version=f"archc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if command is None else [command]:
        importlib.import_module(f".{COMMANDS[name]}", __name__).add_parser(sub)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args, extra = top.parse_known_args(argv)
    if extra:       # said by the command it was given to, with that command's usage
        commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    run: Callable[[argparse.Namespace], int] = args.run
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)     # `kill` cleans up like Ctrl-C: no temporary files left
    collecting = gc.isenabled()
    gc.disable()            # compiling builds many small objects that live to the end (see entry())
    try:
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
        from ..errors import disk_full
        if disk_full(exc):      # a write outside io.atomic_path (a run folder's log) on a full disk
            where = getattr(exc, "filename", None)
            print(f"archc: no space left on the device{f' (writing {where})' if where else ''}: free some space "
                  "or write elsewhere", file=sys.stderr)
            return 1
        if os.environ.get("ARCHC_DEBUG"):
            raise
        print(f"archc: internal error: {type(exc).__name__}: {printable(str(exc))}\n"
              "This is a bug in archc, not in your spec. Run again with ARCHC_DEBUG=1 to see the "
              "traceback, and please report it.", file=sys.stderr)
        return 3
    finally:
        if collecting:
            gc.enable()


def entry() -> None:
    """The ``archc`` program (and ``python -m archcompiler``): :func:`main` in a process that ends with it.

    main() pauses the cyclic garbage collector while a command runs (compiling builds many small
    objects that live to the end); here it stays off from before the first import of pydantic and
    networkx, and the heap is frozen at the end so that interpreter shutdown does not scan it once
    more.  That is about a quarter of a short command such as ``archc flops``.  Reference counting
    frees memory as usual, and shutdown still runs exit handlers and flushes output.

    A command that loaded torch gets the collector back before shutdown: torch objects left in
    reference cycles (a distributed run's process group, its reducer's threads) must be finalised
    while the interpreter still runs, or a torchrun process aborts at exit ("terminate called
    without an active exception", about one run in three without this).
    """
    gc.disable()
    code = main()
    if "torch" in sys.modules:
        gc.enable()
    else:
        gc.freeze()
    sys.exit(code)


__all__ = ["main", "entry", "parser", "COMMANDS", "EXAMPLES", "EXIT_CODES", "NEEDS_IMAGES", "TOP_EXAMPLES"]
