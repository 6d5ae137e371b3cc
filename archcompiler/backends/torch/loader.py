"""Executing generated source as a real module."""

from __future__ import annotations

import linecache
import sys
import types

from .codegen import Generated

_counter = 0


def compile_source(gen: Generated, filename: str) -> type:
    """Execute generated source as a real module (registered with linecache, so tracebacks,
    ``inspect`` and TorchScript can read it) and return its class."""
    global _counter
    _counter += 1
    module_name = f"archc_generated_{_counter}"
    lines = gen.source.splitlines(keepends=True)
    linecache.cache[filename] = (len(gen.source), None, lines, filename)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    exec(compile(gen.source, filename, "exec"), module.__dict__)
    return getattr(module, gen.class_name)


def next_filename(name: str) -> str:
    """The file name the next :func:`compile_source` call's module gets (tracebacks show it)."""
    return f"<archc:{name}:{_counter + 1}>"
