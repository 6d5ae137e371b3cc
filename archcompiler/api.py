"""The public API, re-exported by the package root (``archcompiler.build`` and the rest):
the functions the ``archc`` commands are thin layers over. It lives here, not in
``archcompiler/__init__.py``, so that nothing inside the package imports the package root."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import Diagnostic, SpecError
from .options import SweepOptions, TrainOptions
from .spec import Spec, load_spec


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
    from .backends.torch import build as _build
    from .pretrained import resolve

    published = resolve(spec_or_path, weights, pretrained, overrides)
    return _build(load_spec(spec_or_path, published.overrides), seed=seed, weights=published.weights,
                  drop_missing=drop_missing, check_memory=check_memory, optimize=optimize, compile=compile)


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


def report(spec_or_path: Spec | str | Path, output: str | Path, overrides: dict | list | None = None, batch: int = 1,
           machine: str | Path | None = None, profile: bool = False, device: str = "cpu") -> Path:
    """Write ``archc report``'s page: the diagram (graphviz), the analysis, predicted latency from the
    machine profile and, with ``profile=True``, latency measured per row (torch)."""
    from .backends.dot import collapsed_svg
    from .backends.report import report_html
    from .io import write_text

    spec = load_spec(spec_or_path, overrides)
    measured = None
    if profile:
        from .measure.profile import measure_rows

        measured = measure_rows(spec, batch, device)["rows"]
    return write_text(output, report_html(spec, collapsed_svg(spec), batch=batch, machine=machine, measured=measured,
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
    see :mod:`archcompiler.passes.diff`)."""
    from .passes.diff import diff as _diff

    return _diff(load_spec(a, overrides_a), load_spec(b, overrides_b), layers=layers)


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


def sweep_report(sweep_dir_or_json: str | Path, output: str | Path) -> Path:
    """``archc report --sweep DIR``: a page with a sweep's table and its plot (``sweep.json`` and
    ``pareto.png`` in DIR, or the given ``sweep.json`` and the ``pareto.png`` beside it)."""
    from .sweeps import report_page

    return report_page(sweep_dir_or_json, output)


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


def _snake(text: str) -> str:
    import re
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", text).lower() or "model"
