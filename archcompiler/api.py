"""The public API, re-exported by the package root (``archcompiler.build`` and the rest):
the functions the ``archc`` commands are thin layers over. It lives here, not in
``archcompiler/__init__.py``, so that nothing inside the package imports the package root."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, SpecError
from .options import BuildOptions, SweepOptions, TrainOptions
from .util import mib, shape_text  # noqa: F401  (re-exported: how archc writes sizes)
from .version import __version__  # noqa: F401

if TYPE_CHECKING:
    from .spec import Spec


def load_spec(spec_or_path: Spec | str | Path, overrides: dict | list | None = None) -> Spec:
    """Read, compose and validate a spec (a file, a zoo name or a Spec) with ``--set`` values; every
    error located (:func:`archcompiler.spec.load_spec`). Imported here on first use, so that the API
    module itself (and the command line's start-up) stays light.

    Example::

        spec = archcompiler.load_spec("resnet50", {"num_classes": 2})
    """
    from .spec import load_spec as _load

    return _load(spec_or_path, overrides)


def analyze(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, *, batch: int = 1, depth: int = 1,
            input: tuple[int, int, int] | None = None, optimized: bool = False, train_memory: str | None = None,
            latency: dict[str, Any] | str | Path | bool | None = None) -> dict[str, Any]:
    """Everything ``archc flops`` prints, as a dict, without torch: the rows of the paper's table
    (``rows``: each row's output, params, MACs and FLOPs), the totals, FLOPs by stage and by op, depth,
    peak activation memory and the receptive field; the spec's ``features:``' maps (``features``).

    Args:
        spec_or_path: a spec, its file, or a zoo name; ``overrides``: ``--set`` values.
        batch: the batch the totals and memory are for; ``depth``: 2 for the layers inside each row.
        input: another input size (C, H, W); ``optimized``: the inference graph (BatchNorm folded).
        train_memory: an optimizer (``sgd``, ``adam``, ``adamw``): a training step's memory, by part.
        latency: a machine profile (its dict or file; True: this machine's): predicted time per row.

    Returns:
        the report; see :func:`archcompiler.passes.analyze.analyze` for every key.

    Example::

        archcompiler.analyze("resnet50")["total"]["macs"]         # 4,089,184,256
    """
    from .passes import analyze as _analyze

    return _analyze(spec_or_path, overrides, batch=batch, depth=depth, input=input, optimized=optimized,
                    train_memory=train_memory, latency=latency)


def check(spec_or_path: Spec | str | Path, overrides: dict | list | None = None,
          tolerance: float = 0.02) -> list[Diagnostic]:
    """Compare every claim of the spec with the computed value; return the mismatches.
    ``tolerance`` is the relative difference allowed for params and ops, in [0, 1)."""
    from .passes import annotated_graph, check_claims, rows, shaped_graph, totals

    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise SpecError([Diagnostic(f"tolerance must be a number in [0, 1), got {tolerance!r}", "tolerance")])

    spec = load_spec(spec_or_path, overrides)
    if spec.features:       # the claims are the paper's, of the whole network: checked on it (features checked too)
        shaped_graph(spec)
        spec = dataclasses.replace(spec, features=[])
    g = annotated_graph(spec)
    return check_claims(spec, rows(g, spec), tolerance, totals(g))


def build(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, seed: int | None = None,
          weights: str | Path | None = None, drop_missing: bool = False, check_memory: bool = True,
          optimize: bool = False, compile: bool = False, pretrained: bool = False) -> Any:
    """Compile the spec into a ``torch.nn.Module`` (see :mod:`archcompiler.backends.torch`).

    ``weights`` (a state_dict, or a ``.pt`` or ``.safetensors`` file) of another class count load
    with the classifier layers initialised afresh from ``seed`` (0 when None), each named in one line
    on stderr; any other mismatch is an error. ``optimize=True`` gives the inference module (BatchNorm
    folded into the convolutions, ReLU
    fused, dropout and auxiliary heads removed, channels-last); ``weights`` load into the ordinary
    layout first, so published checkpoints work with it. ``compile=True`` wraps the result in
    ``torch.compile`` where a compiler is available. ``check_memory=False`` builds even when the
    parameters and activations would not fit in free memory (refused by default, before allocating).

    ``pretrained=True`` (or ``weights`` a name such as ``"IMAGENET1K_V1"``, or a URL) loads a builder's
    published weights (``build("resnet50", pretrained=True)``), downloaded once into torch's hub cache;
    the spec takes their input size and preprocessing (its ``data:`` section, see
    :mod:`archcompiler.pretrained`)."""
    from .backends.torch import Weights
    from .backends.torch import build as _build
    from .pretrained import resolve

    published = resolve(spec_or_path, weights, pretrained, overrides)
    return _build(load_spec(spec_or_path, published.overrides), seed=seed,
                  weights=Weights(published.weights, drop_missing=drop_missing), check_memory=check_memory,
                  optimize=optimize, compile=compile)


EMIT_EXTENSIONS = {"model": "pt", "python": "py", "torchscript": "ts", "onnx": "onnx"}


def compile_model(spec_or_path: Spec | str | Path, output: str | Path | None = None,
                  options: BuildOptions | None = None, *, overrides: dict | list | None = None, emit: str = "model",
                  keep_batch_norm: bool = False, force: bool = False, progress: bool = False) -> dict[str, Any]:
    """``archc build``: the module (:func:`build`), its layer tree beside archc's analysis, and the file.

    Args:
        output: where to write; default for ``emit`` other than ``model``: ``<spec name>.py/.ts/.onnx`` here
            (replaced only if archc wrote it, or with ``force``); None with ``emit="model"``: nothing written.
        options: :class:`BuildOptions` (seed, weights, published weights, training heads, memory check,
            optimised, compiled).
        emit: ``model`` (weights and spec, for :func:`load_model`), ``python`` (standalone source),
            ``torchscript`` or ``onnx`` (``keep_batch_norm``: its BatchNormalization nodes kept, so that
            ``archc import`` gives back the same parameters).
        progress: say on stderr what takes time (importing torch, exporting).

    Returns:
        ``model``, ``spec`` (its name), ``input``, ``rows`` (the spec's rows) and ``layers`` (one level
        deeper), ``parameters`` (torch's count) and ``analysis_parameters`` (archc's), ``training_heads``,
        ``note`` (about published weights) and ``written`` (the file, or None; nothing is written when the
        two counts differ).

    Example::

        archcompiler.compile_model("resnet18", "resnet18.onnx", emit="onnx")["written"]
    """
    import sys

    from .backends.torch import Weights
    from .backends.torch import build as _build
    from .errors import BackendError, error
    from .io import check_default_output, refuse_inputs
    from .passes import annotated_graph, rows, totals
    from .pretrained import resolve as published_weights

    o = options or BuildOptions()
    published = published_weights(spec_or_path, o.weights, o.pretrained, overrides)
    spec = load_spec(spec_or_path, published.overrides)
    note = published.entry.model_note if published.entry is not None else None
    if note and progress:
        print(f"archc: {note}", file=sys.stderr)
    out = Path(output or f"{spec.name}.{EMIT_EXTENSIONS[emit]}") if output or emit != "model" else None
    if o.optimize and out is not None and emit == "model":
        raise BackendError([error("a model file keeps the ordinary module; optimise when you load it: "
                                  "archcompiler.load_model(path, optimize=True)", "--optimize",
                                  hint="with --optimize, write --emit python, torchscript or onnx")])
    if out is not None:       # refuse a bad output before the (slow) build
        refuse_inputs(out, [p for p in (spec_or_path, published.file or o.weights) if isinstance(p, (str, Path))])
        if not output:
            check_default_output(out, force)
    g = annotated_graph(spec)
    if progress:
        print(f"building {spec.name} (importing torch)...", file=sys.stderr)
    model = _build(spec, seed=o.seed, weights=Weights(published.weights), heads=o.heads,
                   check_memory=o.check_memory, optimize=o.optimize, compile=o.compile)
    heads = o.heads and not o.optimize
    if o.optimize:
        from .passes.optimize import optimize

        g = optimize(g)
    built = {"model": model, "spec": spec.name, "input": list(spec.input), "rows": rows(g, spec),
             "layers": rows(g, spec, depth=2), "parameters": sum(p.numel() for p in model.parameters()),
             "analysis_parameters": totals(g, training=heads)["params"], "training_heads": heads, "note": note,
             "written": None}
    if out is not None and built["parameters"] == built["analysis_parameters"]:
        built["written"] = write_model(model, out, emit=emit, spec=spec, keep_batch_norm=keep_batch_norm,
                                       progress=progress)
    return built


def write_model(model: Any, output: str | Path, *, emit: str = "model", spec: Spec | None = None,
                keep_batch_norm: bool = False, progress: bool = False) -> Path:
    """Write a module archc built (atomically): ``model`` (weights and spec: :func:`save_model`), ``python``
    (its standalone source), ``torchscript`` or ``onnx`` (``spec``: the module's, which names the ONNX
    outputs; ``keep_batch_norm``: BatchNormalization nodes kept). Returns the path.

    Example::

        archcompiler.write_model(archcompiler.build("resnet18"), "resnet18.py", emit="python")
    """
    out = Path(output)
    if emit == "model":
        return save_model(model, out)
    if emit == "python":
        from .io import write_text

        return write_text(out, model.code)
    import sys

    from .backends.torch import archc_info
    from .backends.torch.export import export
    from .modelspec import embedded_spec

    if progress:
        print(f"exporting {emit}...", file=sys.stderr)
    export(model, spec if spec is not None else embedded_spec({"spec": archc_info(model).spec}), emit, out,
           keep_batch_norm=keep_batch_norm)
    return out


def save_model(model: Any, path: str | Path) -> Path:
    """Save a module built by archc: its weights and the resolved spec in one file, written
    atomically, which :func:`load_model` (and ``archc draw``) read back without the YAML."""
    from .backends.torch import save_model as _save

    return _save(model, path)


def load_model(path: str | Path, optimize: bool = False, compile: bool = False) -> Any:
    """Reload a module saved by ``archc build -o model.pt`` or ``archc train`` (the spec is inside
    the file); ``optimize=True`` for the inference module."""
    from .backends.torch import load_model as _load

    return _load(path, optimize=optimize, compile=compile)


def draw(spec_or_path: Spec | str | Path, output: str | Path | None = None, *, format: str | None = None,
         collapse: bool = False, depth: int | None = None, color: str = "none", rankdir: str = "TB",
         overrides: dict | list | None = None, force: bool = False, optimized: bool = False) -> Any:
    """Render the architecture diagram (``archc draw``).

    Args:
        spec_or_path: a spec, its file, or a zoo name (``resnet50``).
        output: the file to write (its extension gives the format: svg, png, pdf, dot); default
            ``<spec name>.svg`` here; ``"-"`` writes nothing and returns the drawing in ``data``.
        format: the format, when not the output's extension.
        collapse: one box per row (block instances folded); ``depth``: how many levels to unfold.
        color: ``none``, ``cost`` or ``memory`` (boxes shaded by that row's share).
        rankdir: ``TB`` (top to bottom) or ``LR``.
        overrides: ``--set`` values (``{"num_classes": 2}`` or ``["num_classes=2"]``).
        force: replace a default-named file archc did not write.
        optimized: the inference graph (BatchNorm folded, ReLU fused).

    Returns:
        the drawing: its ``path`` (None with ``"-"``), ``format`` and ``data``.

    Example::

        archcompiler.draw("resnet50", "resnet50.svg", collapse=True)
    """
    from .backends.dot import View
    from .backends.dot import draw as _draw

    view = View(collapse=collapse, depth=depth, color=color, rankdir=rankdir, optimized=optimized)
    return _draw(spec_or_path, output, format=format, view=view, overrides=overrides, force=force)


def train(spec_or_path: Spec | str | Path, data: str | Path, options: TrainOptions | None = None, *,
          overrides: dict | list | None = None) -> Any:
    """Train on an image folder (one sub-folder per class) with the spec's recipe (``archc train``).

    Args:
        spec_or_path: a spec, its file, or a zoo name.
        data: the training images, one sub-folder per class; for a segmentation network (its main output a
            map), ``data/images/NAME.jpg`` and ``data/masks/NAME.png`` (class indices, 255 not labelled;
            ``data/classes.txt`` may name the classes).
        options: the run's options (:class:`TrainOptions`, ``archc train``'s flags: validation, epochs,
            batch size, learning rate, seed, device, run folder, resume, weights, freeze, patience, ...);
            default: the recipe as the spec says it, a new run folder ``runs/<name>-N``.
        overrides: ``--set`` values.

    Returns:
        a result with ``.model`` (trained, in eval mode), ``.history`` (one dict per epoch),
        ``.run_dir``, ``.classes``, ``.best`` and ``.new_heads``.

    Raises:
        :class:`SpecError` for the spec or the arguments, :class:`RunError` for what the run meets (no CUDA,
        an empty folder, a run folder to resume).

    Example::

        result = archcompiler.train("googlenet-small", "digits/", TrainOptions(epochs=3),
                                    overrides={"num_classes": 10})
    """
    from .training import train as _train

    return _train(spec_or_path, data, options, overrides=overrides)


def resume_arguments(run_dir: str | Path | None, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What ``archc train --resume`` trains with: the arguments a run folder's ``args.json`` recorded
    (``spec``, ``data``, ``overrides`` and :class:`TrainOptions`' fields), each one in ``given`` (not
    None) overriding its recorded value; and those overrides in words (``--epochs 5 (was 3)``).

    Args:
        run_dir: the run folder; None: the latest ``runs/NAME-N`` of ``given["spec"]``.
        given: the arguments given again, by name (``{"epochs": 5, "overrides": ["train.lr=0.01"]}``).

    Example::

        kw, changes = archcompiler.resume_arguments("runs/digits", {"epochs": 5})
        archcompiler.train(kw["spec"], kw["data"], TrainOptions.from_given(kw).replace(resume=True),
                           overrides=kw["overrides"])
    """
    from .training.run import resume_arguments as _resume

    return _resume(run_dir, given)


def train_summary(result: Any) -> str:
    """The summary ``archc train`` prints at the end of a run: epochs, classes, the last epoch's loss and
    accuracy, speed, the best checkpoint (``result``: what :func:`train` returned).

    Example::

        print(archcompiler.train_summary(archcompiler.train("googlenet-small", "digits/")))
    """
    from .backends.torch import archc_info
    from .training import summary

    return summary(result, archc_info(result.model).name)


def evaluate(spec_or_checkpoint: Spec | str | Path, data: str | Path, *, weights: str | Path | None = None,
             overrides: dict | list | None = None, device: str = "cpu", batch_size: int = 64, workers: int = 0,
             plot: str | Path | None = None, pretrained: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix on an image folder (``archc evaluate``).

    Args:
        spec_or_checkpoint: a checkpoint (``runs/NAME/best.pt``, which holds its spec), or a spec with
            ``weights``; ``pretrained=True`` (or ``weights`` a name or URL): a builder's published weights.
        data: one sub-folder per class, named as in training.
        plot: also draw the confusion matrix to this PNG file.

    A segmentation network is evaluated on ``data/images`` and ``data/masks`` (see :func:`train`): over the
    labelled pixels, with ``miou`` (the mean intersection over union of the classes that occur or are
    predicted), ``iou`` per class and ``pixels``.

    Returns:
        ``spec``, ``images``, ``skipped``, ``accuracy``, ``per_class_accuracy``, ``classes``, ``confusion``
        (rows: the true class); with published weights of more categories than the folder's, ``other`` (the
        images taken for a category outside them); with ``plot``, ``plot``.

    Example::

        archcompiler.evaluate("runs/digits/best.pt", "digits/")["accuracy"]
    """
    from .training import evaluate as _evaluate

    return _evaluate(spec_or_checkpoint, data, weights=weights, overrides=overrides, device=device,
                     batch_size=batch_size, workers=workers, plot=plot, pretrained=pretrained)


def is_published(weights: str | Path | None, pretrained: bool = False) -> bool:
    """Whether ``weights`` (with ``pretrained``) name published weights (``IMAGENET1K_V1``, ``DEFAULT``, a URL)
    rather than a file of the user's, as :func:`evaluate` and :func:`predict` take them.

    Example::

        archcompiler.is_published("IMAGENET1K_V1")      # True
    """
    from .pretrained import is_url, is_weights_name

    return bool(pretrained or is_url(weights) or is_weights_name(weights))


def predict(spec_or_checkpoint: Spec | str | Path, images: list[str | Path], *, weights: str | Path | None = None,
            overrides: dict | list | None = None, top: int = 5, device: str = "cpu",
            pretrained: bool = False, masks: str | Path = "masks") -> list[dict[str, Any]]:
    """The ``top`` classes of each image with their probabilities (``archc predict``), the images prepared
    as in training.

    Args:
        spec_or_checkpoint, weights, pretrained: as :func:`evaluate` (published weights come with their
            category names).
        images: image files.
        masks: for a segmentation network, the folder its predicted masks go to (``masks/NAME.png``, a
            palette PNG of class indices in Pascal VOC's colours, the image's size).

    Returns:
        one dict per image: ``image`` and ``top`` (``[{"class": name, "probability": p}, ...]``, the most
        probable first); for a segmentation network ``image``, ``mask`` (the file written) and ``classes``
        (the share of the image each predicted class covers).

    Example::

        archcompiler.predict("resnet50", ["cat.jpg"], pretrained=True)
    """
    from .training import predict as _predict

    return _predict(spec_or_checkpoint, images, weights=weights, overrides=overrides, top=top, device=device,
                    pretrained=pretrained, masks=masks)


def report(spec_or_path: Spec | str | Path, output: str | Path | None = None,
           overrides: dict | list | None = None, *, batch: int = 1, machine: str | Path | None = None,
           profile: bool | str = False, weights: str | bool | None = None, force: bool = False) -> Path:
    """Write ``archc report``'s page: the diagram (graphviz), the analysis, predicted latency from the
    machine profile and, with ``profile``, latency measured per row (torch; ``True`` on the CPU, or the
    device's name).

    Args:
        output: the page (default ``<spec name>-report.html`` here, replaced only if archc wrote it, or
            with ``force``).
        weights: the name of a builder's published weights (``IMAGENET1K_V1``; ``True``: the builder's
            default, as ``--pretrained``): the page describes the network as they take it (their input size);
            nothing is downloaded.

    Returns:
        the page's path.

    Example::

        archcompiler.report("resnet50", "resnet50.html")
    """
    from .backends.dot import collapsed_svg
    from .backends.report import report_html
    from .errors import error
    from .io import check_default_output, refuse_inputs, write_text
    from .pretrained import is_weights_name
    from .pretrained import resolve as published_weights

    if weights is not None and weights is not True and not is_weights_name(weights):
        raise SpecError([error(f"archc report describes the network, not a file of weights: --weights takes the "
                               f"name of published weights, not {weights}", "--weights",
                               hint="e.g. --weights IMAGENET1K_V1, or --pretrained")])
    published = published_weights(spec_or_path, None if weights is True else weights, weights is True, overrides,
                                  fetch_file=False)
    spec = load_spec(spec_or_path, published.overrides)
    out = Path(output or f"{spec.name}-report.html")
    if isinstance(spec_or_path, (str, Path)):
        refuse_inputs(out, [spec_or_path])
    if output is None:
        check_default_output(out, force)
    device = profile if isinstance(profile, str) else "cpu"
    measured = None
    if profile:
        from .measure.profile import measure_rows

        measured = measure_rows(spec, batch, device)["rows"]
    return write_text(out, report_html(spec, collapsed_svg(spec), batch=batch, machine=machine, measured=measured,
                                       device=device))


def zoo(pattern: str | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """The names archc answers to without a path (``archc zoo``): torchvision's builders that the shipped
    specs declare, then the shipped spec files. Each: ``name``, ``spec`` (the file, as
    ``specs/NAME.yaml``), ``sets`` (the parameters the name sets), ``input`` [C, H, W], ``params`` and
    ``macs`` (one image). ``pattern`` keeps the names containing it; ``progress`` shows a bar on stderr."""
    from .passes import annotated_graph
    from .passes.analyze import totals
    from .spec import zoo as shipped
    from .util import progress_bar

    names = [n for n in shipped.names() if pattern is None or pattern in n]
    entries = []
    for name in progress_bar(names, "specs", enabled=progress):
        builder = shipped.find(name)
        spec = load_spec(name)
        total = totals(annotated_graph(spec))
        entries.append({"name": name, "spec": f"specs/{builder.file.name}", "sets": builder.sets,
                        "input": list(spec.input), "params": total["params"], "macs": total["macs"]})
    return entries


def diff(a: Spec | str | Path, b: Spec | str | Path, overrides_a: dict | list | None = None,
         overrides_b: dict | list | None = None, layers: bool = False) -> dict[str, Any]:
    """Row-by-row differences between two specs, or layer by layer (``layers``, as ``archc diff --layers``;
    see :mod:`archcompiler.passes.diff`): ``rows`` (each with its ``status``, ``changes``, outputs and
    deltas), ``params``, ``total``; ``a_source`` / ``b_source`` name each file as people know it (a
    shipped spec as ``specs/NAME.yaml``).

    Example::

        archcompiler.diff("specs/googlenet.yaml", "specs/googlenet-2class.yaml")["total"]["params"]
    """
    from .passes.diff import diff as _diff

    result = _diff(load_spec(a, overrides_a), load_spec(b, overrides_b), layers=layers)
    result["a_source"], result["b_source"] = _shown(result["a_file"]), _shown(result["b_file"])
    return result


def _shown(path: Any) -> str:
    """A shipped spec as ``specs/NAME.yaml``; any other file as given."""
    from .spec.zoo import SPEC_DIR

    try:
        return f"specs/{Path(path).resolve().relative_to(SPEC_DIR)}"
    except (ValueError, OSError, TypeError):
        return str(path)


def sweep(spec_or_path: Spec | str | Path, grid: list[str] | dict[str, list[Any]],
          options: SweepOptions | None = None, *, overrides: list[str] | None = None,
          training: TrainOptions | None = None, data: str | Path | None = None) -> dict[str, Any]:
    """Every combination of ``grid`` as a variant of the spec, analysed and ranked (``archc sweep``).

    Args:
        spec_or_path: a spec, its file, or a zoo name.
        grid: ``["width=0.5,1.0", ...]`` or ``{"width": [0.5, 1.0]}``; each variant is validated like
            ``--set`` (after ``overrides``, the sweep's own ``--set`` values).
        options: :class:`SweepOptions`: the batch, the optimised module, the output folder (``sweep.json``
            and ``pareto.png``), the machine profile, measuring each variant (``measure``, ``rounds``,
            ``device``), progress.
        training: train each valid variant briefly with these options (:class:`TrainOptions`) on ``data``,
            each a trial of an Optuna study in the output folder (``sweep.db``, resumable and shareable by
            several processes; ``trials/`` holds each trial's run folder).

    Returns:
        ``rows`` (one per variant: ``name``, ``sets``, ``ok``, ``errors``, ``params``, ``macs``,
        ``peak_activation_bytes``, ``train_memory_bytes``, ``predicted_ms``, ``predicted_rank``, ``pareto``;
        measured: ``measured_ms`` and ``measured_rank``; trained: ``accuracy``, ``trial``, ``trial_state``)
        and ``axes`` (the plot's). Without measuring or training it never imports torch.

    Example::

        archcompiler.sweep("resnet18", ["width=0.5,1.0"], SweepOptions(output="sweep/"))["rows"]
    """
    from .sweeps import run

    return run(spec_or_path, grid, options or SweepOptions(), overrides, training, data)


def sweep_table(result: dict[str, Any], raw: bool = False) -> tuple[list[str], list[list[Any]]]:
    """A sweep's table as ``archc sweep`` prints it: the headers and one row of cells per variant
    (``raw``: numbers unformatted, as its CSV has them; an ``error`` column when a variant has errors).

    Example::

        headers, rows = archcompiler.sweep_table(archcompiler.sweep("resnet18", ["width=0.5,1.0"]))
    """
    from .sweeps import table

    return table(result, raw)


def sweep_report(sweep_dir_or_json: str | Path, output: str | Path | None = None, force: bool = False) -> Path:
    """``archc report --sweep DIR``: a page with a sweep's table and its plot (``sweep.json`` and
    ``pareto.png`` in DIR, or the given ``sweep.json`` and the ``pareto.png`` beside it); default
    ``sweep-report.html`` in the sweep's folder (replaced only if archc wrote it, or with ``force``).

    Example::

        archcompiler.sweep_report("sweep/")
    """
    from .io import check_default_output
    from .sweeps import report_page

    source = Path(sweep_dir_or_json)
    out = Path(output or (source if source.is_dir() else source.parent) / "sweep-report.html")
    if output is None:
        check_default_output(out, force)
    return report_page(source, out)


def import_module(model: Any, input: tuple[int, ...] | list[int] | None = None, name: str | None = None,
                  source: str | None = None, blocks: bool = True, verify: bool = True) -> str:
    """The spec of a PyTorch module (``archc import``), as YAML text: ``model`` is traced with
    torch.fx (this runs its forward), each call mapped to a layer; repeated sub-modules become blocks
    and tables. ``input`` is (C, H, W) (default: the model's ``INPUT_SHAPE`` or 3 x 224 x 224).
    Built, the spec has the module's state_dict keys: ``build(load_spec(text)).load_state_dict(
    model.state_dict())`` loads strictly.

    With ``verify`` (the default) the spec is built with the module's weights (BatchNorm statistics
    perturbed) and compared with it on a seeded input before it is returned: blocks and tables that
    compute anything else fall back to one layer per line; a spec that still differs is an error
    naming the first layer whose output differs. Raises :class:`BackendError` naming the module path,
    its class and the closest supported op for what does not map.

    >>> import torchvision
    >>> text = import_module(torchvision.models.resnet18(), input=(3, 224, 224))   # doctest: +SKIP
    """
    from .importers.pytorch import trace
    from .importers.verify import verified_spec

    name = name or _snake(type(model).__name__)
    flat = trace(model, tuple(input) if input else None, name=name, source=source or f"a {type(model).__name__}")
    text, _ = verified_spec(model, flat, blocks=blocks, verify=verify)
    return text


def import_model(target: str, output: str | Path | None = None, *, weights: str | Path | None = None,
                 name: str | None = None, args: list[str] | None = None, input: str | tuple[int, ...] | None = None,
                 blocks: bool = True, verify: bool = True) -> dict[str, Any]:
    """``archc import``: the spec of a PyTorch callable or an ONNX file, verified and written.

    Args:
        target: ``MODULE:CALLABLE`` (``torchvision.models:resnet50``, ``my_model.py:Net``: this imports and
            runs that code) or ``MODEL.onnx`` (data: nothing in it runs).
        output: the spec file (default: nothing written; the text is returned).
        weights: the weights' file (safetensors; default beside ``output``): the ONNX file's initializers or
            the module's state_dict, so that ``archc train SPEC --weights FILE`` fine-tunes them.
        name: the spec's name; ``args``: the callable's arguments, ``["KEY=VALUE", ...]`` (numbers,
            true/false or text); ``input``: ``"CxHxW"`` or (C, H, W) (default: the model's ``INPUT_SHAPE``,
            or 3 x 224 x 224).
        blocks: repeated sub-modules as blocks and tables (False: one layer per line).
        verify: build the spec and compare it with the source (the module, or onnxruntime) on a seeded
            input before anything is written (a spec that differs is never written).

    Returns:
        ``text`` (the spec), ``notes`` (what was done instead of what was asked, one line each) and
        ``written`` (the files written, the spec first).

    Example::

        archcompiler.import_model("torchvision.models:resnet18", "resnet18.yaml", args=["weights=None"])
    """
    from .importers.target import import_target

    return import_target(str(target), None if output is None else str(output),
                         weights=None if weights is None else str(weights), name=name, args=args, input=input,
                         blocks=blocks, verify=verify)


def op_catalog(op: str | None = None) -> list[dict[str, Any]]:
    """Every op a spec can use (``archc ops``): archc's own, then the installed plugins' (entry-point group
    ``archcompiler.ops``), each ``{"op", "doc", "fields": [{"name", "type", "default", "doc"}], "provider",
    "kinds"}``; with ``op``, that one alone. Never imports torch.

    Raises :class:`~archcompiler.SpecError` for an op no installed package provides (naming the package
    that does, where archc knows one).

    >>> [f["name"] for f in op_catalog("dropout")[0]["fields"]]
    ['p']
    """
    from .errors import SpecError, error
    from .ops import catalog, unknown

    entries = catalog()
    if op is None:
        return entries
    found = [e for e in entries if e["op"] == op]
    if not found:
        message, hint = unknown(op)
        raise SpecError([error(message, "ops", hint=hint)])
    return found


def validate(specs: list[Spec | str | Path], overrides: dict | list | None = None) -> list[dict[str, Any]]:
    """Validate spec files (``archc validate``): each read, composed, checked against the op schemas and
    shaped, and the paper's claimed output sizes compared (not under ``overrides``: a variant's sizes
    differ by design; ``archc check`` compares those).

    Returns:
        one dict per spec: ``file``, ``valid``, ``summary`` (valid ones), ``errors`` (a list of
        :class:`Diagnostic`), ``output_claims`` and ``claims_compared``.

    Example::

        [r["valid"] for r in archcompiler.validate(["specs/googlenet.yaml"])]      # [True]
    """
    from .errors import ArchcError, GraphError
    from .passes import shaped_graph
    from .passes.claims import check_output_claims, count_output_claims

    results = []
    for path in specs:
        try:
            spec = load_spec(path, overrides)
            g = shaped_graph(spec)
            claimed = count_output_claims(spec)
            compared = claimed > 0 and not overrides
            if compared:        # the paper's output sizes: of the whole network, whatever features: chooses
                whole = shaped_graph(dataclasses.replace(spec, features=[])) if spec.features else g
                wrong = check_output_claims(spec, whole)
                if wrong:
                    raise GraphError(wrong)
            results.append({"file": str(path), "valid": True, "summary": spec.summary(), "errors": [],
                            "output_claims": claimed, "claims_compared": compared})
        except ArchcError as exc:
            results.append({"file": str(path), "valid": False, "errors": list(exc.errors)})
    return results


def resolve(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, *, format: str = "yaml",
            origins: bool = True) -> str:
    """The spec as archc reads it (``archc resolve``): ``extends``, ``edits`` and ``--set`` applied,
    validated. ``format="yaml"``: YAML with a ``# file:line`` comment per value (``origins=False``: plain);
    ``"json"``: ``{"spec": ..., "origins": ...}`` as JSON text.

    Example::

        print(archcompiler.resolve("specs/googlenet-2class.yaml"))
    """
    import json

    from .spec.origins import annotated_yaml
    from .spec.origins import origins as origin_map
    from .spec.source import plain

    spec = load_spec(spec_or_path, overrides)
    if format == "json":
        return json.dumps({"spec": plain(spec.document), "origins": origin_map(spec.document)}, indent=2) + "\n"
    return annotated_yaml(spec.document, with_origins=origins)


def schema(output: str | Path | None = None) -> str:
    """The JSON Schema of a spec file (``archc schema``) for editors; with ``output``, also written there
    (atomically). Numbers in layer fields also take expressions (``round_to(64 * width, 8)``).

    Example::

        archcompiler.schema("schema/archc.schema.json")
    """
    from .spec.schema import schema_text

    text = schema_text()
    if output is not None:
        from .io import write_text

        write_text(output, text)
    return text


def op_markdown(entries: list[dict[str, Any]] | None = None) -> str:
    """The README's op table (``archc ops --format markdown``) of :func:`op_catalog`'s entries (default: all).

    Example::

        print(archcompiler.op_markdown())
    """
    from .ops import markdown

    return markdown(op_catalog() if entries is None else entries)


def plugin_problems() -> list[str]:
    """Why each installed op plugin that was left out was (it failed to load, or reuses a name): one line each.

    Example::

        for line in archcompiler.plugin_problems(): print(line)
    """
    from .ops import plugin_problems as problems

    return list(problems())


def profile(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, *, batch: int = 1,
            device: str = "cpu", optimize: bool = False, repeats: int = 10,
            machine: str | Path | None = None) -> dict[str, Any]:
    """Predicted and measured milliseconds per row and in total (``archc profile``; imports torch).

    Args:
        spec_or_path, overrides: the spec and ``--set`` values.
        batch, device: what is timed; ``optimize``: the inference module; ``repeats``: runs per row (the median).
        machine: the machine profile the prediction uses (default: the one ``archc calibrate`` saved).

    Returns:
        ``rows`` ({``name``, ``predicted_ms``, ``measured_ms``, ``intensity``, ``bound``}), ``total`` (each column
        summed; ``whole_call_ms``: the forward pass timed as one call), ``machine_speed`` (now against when
        calibrated) and ``machine_unsteady``.

    Example::

        archcompiler.profile("resnet18", batch=8)["total"]
    """
    from .measure.profile import profile_report

    return profile_report(spec_or_path, batch, device, optimize, repeats, machine, overrides)


def calibrate(device: str = "cpu", output: str | Path | None = None, *, quick: bool = False, force: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Measure this machine's kernels and write its profile (``archc calibrate``), which latency
    prediction reads (imports torch; under a minute, a few seconds with ``quick``).

    Args:
        device: ``cpu`` or ``cuda``; output: the profile's file (default ``~/.cache/archc/machine-DEVICE.json``).
        force: write it even when the machine's speed moved more than the limit while it was measured
            (marked as unsteady); by default that is refused as a busy machine.
        progress: progress on stderr.

    Returns:
        ``profile`` (what was written), ``path``, ``summary`` (the figures in words) and ``warning`` (None, or
        why predictions from it may be off).

    Example::

        archcompiler.calibrate(quick=True)["path"]
    """
    import json

    from .io import write_text
    from .measure.calibrate import CalibrationRefused, main_progress, summarize
    from .measure.calibrate import calibrate as measure
    from .passes.latency import default_profile_path, unsteady
    from .passes.machine import MOVED_LIMIT, speed_moved

    profile = measure(device, progress=main_progress if progress else None, quick=quick)
    moved = speed_moved(profile)
    if moved > MOVED_LIMIT:
        lo, hi = profile["speed_percentiles"]
        if not force:
            raise CalibrationRefused(
                f"no profile written: the machine was busy while it was measured: its speed moved {moved:.1f}x (a "
                f"reference kernel took {lo:.2f}x-{hi:.2f}x of its median time, 10th to 90th percentile), more than "
                f"the {MOVED_LIMIT:g}x a profile may move",
                hint="run archc calibrate again when the machine is idle, or with --force to write it anyway, "
                     "marked as unsteady")
        profile["unsteady"] = {"moved": round(moved, 1), "limit": MOVED_LIMIT}
    path = Path(output or default_profile_path(device))
    write_text(path, json.dumps(profile, indent=1))
    return {"profile": profile, "path": path, "summary": summarize(profile), "warning": unsteady(profile)}


def _snake(text: str) -> str:
    import re
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", text).lower() or "model"
