"""The public API, re-exported by the package root (``archcompiler.build`` and the rest):
the functions the ``archc`` commands are thin layers over. It lives here, not in
``archcompiler/__init__.py``, so that nothing inside the package imports the package root.

One module per area: :mod:`.specs` (reading and checking specs), :mod:`.analysis` (cost, diagram,
report, latency), :mod:`.models` (the torch module and its files), :mod:`.runs` (training, evaluation,
prediction), :mod:`.sweeps` and :mod:`.importing`; every name is here. Importing this package loads no
library: each function imports what it needs when called."""

from __future__ import annotations

from ..options import BuildOptions, DrawOptions, SweepOptions, TrainOptions
from ..util import mib, shape_text
from ..version import __version__
from .analysis import analyze, calibrate, draw, profile, report
from .importing import import_model, import_module
from .models import EMIT_EXTENSIONS, build, compile_model, load_model, save_model, write_model
from .runs import evaluate, is_published, predict, resume_arguments, train, train_summary
from .specs import check, diff, load_spec, op_catalog, op_markdown, plugin_problems, resolve, schema, validate, zoo
from .sweeps import sweep, sweep_report, sweep_table

__all__ = ["load_spec", "validate", "resolve", "schema", "check", "diff", "zoo", "op_catalog", "op_markdown",
           "plugin_problems", "analyze", "draw", "report", "profile", "calibrate", "build", "compile_model",
           "write_model", "save_model", "load_model", "EMIT_EXTENSIONS", "train", "resume_arguments",
           "train_summary", "evaluate", "is_published", "predict", "sweep", "sweep_table", "sweep_report",
           "import_module", "import_model", "BuildOptions", "DrawOptions", "SweepOptions", "TrainOptions", "mib", "shape_text",
           "__version__"]
