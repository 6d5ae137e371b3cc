"""archc: a declarative architecture-spec compiler for convolutional networks.

The public API mirrors the command line::

    spec = archcompiler.load_spec("specs/googlenet.yaml", overrides={"num_classes": 2})
    graph = archcompiler.lower(spec)             # networkx DiGraph of primitive ops
    report = archcompiler.analyze(spec)          # what `archc flops --format json` prints
    problems = archcompiler.check(spec)          # what `archc check` reports
    model = archcompiler.build(spec, seed=0)     # torch.nn.Module   (imports torch)
    dot = archcompiler.draw(spec, "net.svg")     # graphviz diagram  (imports graphviz)
    table = archcompiler.sweep(spec, ["width=0.5,1.0"], SweepOptions(output="sweep/"))  # variants, Pareto plot

torch and graphviz are imported only by the functions that need them.  The API itself (pydantic,
networkx and the spec models) is imported on first use of one of its names, so ``import archcompiler``
and the command line's start-up stay light.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from .errors import ArchcError, BackendError, Diagnostic, GraphError, Location, RunError, SpecError
from .version import __version__

# name -> the module (relative to this package) that defines it, imported on first use (PEP 562)
_LAZY = {
    **dict.fromkeys(["build", "calibrate", "check", "compile_model", "diff", "draw", "evaluate", "import_model",
                     "import_module", "is_published", "load_model", "op_catalog", "op_markdown", "plugin_problems",
                     "predict", "profile", "report", "resolve", "resume_arguments", "save_model", "schema", "sweep",
                     "sweep_report", "sweep_table", "train", "train_summary", "validate", "write_model", "zoo"],
                    ".api"),
    **dict.fromkeys(["BuildOptions", "DrawOptions", "TrainOptions", "SweepOptions"], ".options"),
    "lower": ".ir",
    "analyze": ".passes",
    "Spec": ".spec",
    "load_spec": ".spec",
}

if TYPE_CHECKING:       # what the names are, for type checkers and editors
    from .api import (
        build,
        calibrate,
        check,
        compile_model,
        diff,
        draw,
        evaluate,
        import_model,
        import_module,
        is_published,
        load_model,
        op_catalog,
        op_markdown,
        plugin_problems,
        predict,
        profile,
        report,
        resolve,
        resume_arguments,
        save_model,
        schema,
        sweep,
        sweep_report,
        sweep_table,
        train,
        train_summary,
        validate,
        write_model,
        zoo,
    )
    from .ir import lower
    from .options import BuildOptions, DrawOptions, SweepOptions, TrainOptions
    from .passes import analyze
    from .spec import Spec, load_spec


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        if name.isidentifier() and not name.startswith("__") and \
                importlib.util.find_spec(f"{__name__}.{name}") is not None:   # a subpackage (archcompiler.passes):
            return importlib.import_module(f".{name}", __name__)            # there whatever was imported before
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value         # later uses find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["load_spec", "lower", "analyze", "Spec", "build", "calibrate", "check", "compile_model", "diff", "draw",
           "evaluate", "import_model", "import_module", "is_published", "load_model", "op_catalog", "op_markdown",
           "plugin_problems", "predict", "profile", "report", "resolve", "resume_arguments", "save_model", "schema",
           "sweep", "sweep_report", "sweep_table", "train", "train_summary", "validate", "write_model", "zoo",
           "BuildOptions", "DrawOptions", "TrainOptions", "SweepOptions", "SpecError", "GraphError", "BackendError", "RunError",
           "ArchcError", "Diagnostic", "Location", "__version__"]
