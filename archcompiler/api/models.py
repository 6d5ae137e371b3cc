"""The torch module of a spec: build it, write it (model file, source, TorchScript, ONNX), load it back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import BuildOptions
from .specs import load_spec

if TYPE_CHECKING:
    from ..spec import Spec


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
    from ..backends.torch import Weights
    from ..backends.torch import build as _build
    from ..pretrained import resolve

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

    from ..backends.torch import Weights
    from ..backends.torch import build as _build
    from ..errors import BackendError, error
    from ..io import check_default_output, refuse_inputs
    from ..passes import annotated_graph, rows, totals
    from ..pretrained import resolve as published_weights

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
        from ..passes.optimize import optimize

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
        from ..io import write_text

        return write_text(out, model.code)
    import sys

    from ..backends.torch import archc_info
    from ..backends.torch.export import export
    from ..modelspec import embedded_spec

    if progress:
        print(f"exporting {emit}...", file=sys.stderr)
    export(model, spec if spec is not None else embedded_spec({"spec": archc_info(model).spec}), emit, out,
           keep_batch_norm=keep_batch_norm)
    return out


def save_model(model: Any, path: str | Path) -> Path:
    """Save a module built by archc: its weights and the resolved spec in one file, written
    atomically, which :func:`load_model` (and ``archc draw``) read back without the YAML."""
    from ..backends.torch import save_model as _save

    return _save(model, path)


def load_model(path: str | Path, optimize: bool = False, compile: bool = False) -> Any:
    """Reload a module saved by ``archc build -o model.pt`` or ``archc train`` (the spec is inside
    the file); ``optimize=True`` for the inference module."""
    from ..backends.torch import load_model as _load

    return _load(path, optimize=optimize, compile=compile)
