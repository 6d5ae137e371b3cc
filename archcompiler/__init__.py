"""archc: a declarative architecture-spec compiler for convolutional networks.

The public API mirrors the command line::

    spec = archcompiler.load_spec("specs/googlenet.yaml", overrides={"num_classes": 2})
    graph = archcompiler.lower(spec)             # networkx DiGraph of primitive ops
    report = archcompiler.analyze(spec)          # what `archc flops --format json` prints
    problems = archcompiler.check(spec)          # what `archc check` reports
    model = archcompiler.build(spec, seed=0)     # torch.nn.Module   (imports torch)
    dot = archcompiler.draw(spec, "net.svg")     # graphviz diagram  (imports graphviz)
    table = archcompiler.sweep(spec, ["width=0.5,1.0"], output="sweep/")   # variants, Pareto plot

torch and graphviz are imported only by the functions that need them.
"""

from __future__ import annotations

from .api import (
           build,
           check,
           diff,
           draw,
           evaluate,
           import_module,
           load_model,
           predict,
           report,
           save_model,
           sweep,
           train,
           zoo,
)
from .errors import ArchcError, BackendError, Diagnostic, GraphError, Location, SpecError
from .ir import lower
from .passes import analyze
from .spec import Spec, load_spec
from .version import __version__

__all__ = ["load_spec", "lower", "analyze", "check", "build", "save_model", "load_model", "train", "evaluate",
           "predict", "report", "draw", "diff", "zoo", "sweep", "import_module", "Spec",
           "SpecError", "GraphError", "BackendError", "ArchcError", "Diagnostic", "Location", "__version__"]
