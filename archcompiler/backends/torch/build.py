"""Building, saving and loading torch modules from specs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import BackendError, Location, error
from ...modelfile import ModelFile, read_weights, write_model_file
from ...modelspec import embedded_spec
from ...passes import annotated_graph
from ...spec import Spec
from ...spec.source import plain
from ...version import __version__
from .codegen import generate
from .info import ArchcInfo, archc_info
from .loader import compile_source, next_filename
from .optimized import compile_module, optimize_module


def available_memory() -> int:
    """Bytes of memory this process can still take (MemAvailable on Linux; total memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**63


def _check_memory(g: Any, spec: Spec, heads: bool) -> None:
    """Refuse, before anything is allocated, a module whose parameters, buffers and activations
    (one image, float32) would not fit in the memory this machine has free."""
    from ...passes import annotate_memory, totals

    t = totals(g, training=heads)
    weights = 4 * (t["params"] + t["buffers"])
    activations = annotate_memory(g, batch=1, training=heads)
    need, have = weights + activations, available_memory()
    if need > have:
        gib = 1024 ** 3
        raise BackendError([error(
            f"the model needs about {need / gib:.1f} GiB ({weights / gib:.1f} GiB of weights, "
            f"{activations / gib:.1f} GiB of activations for one image), more than the {have / gib:.1f} GiB free",
            "build", Location(spec.file), hint="check the channel counts and input size; to build anyway, "
            "pass --no-memory-check (check_memory=False)")])


@dataclass(frozen=True)
class Weights:
    """Weights for :func:`build` with how to load them: ``source`` (a state_dict, a ``.pt`` or
    ``.safetensors`` file, a :class:`ModelFile`; None: none); ``drop_missing`` builds without the
    training-only heads when ``heads`` is not given (for weights that lack them); with ``new_heads``,
    a classifier layer whose shape differs from the weights' (another class count) is initialised
    afresh and passed to ``log`` (a :class:`~.weights.NewHead`, one line as text; default: printed
    to stderr), otherwise every tensor must fit."""
    source: str | Path | dict | ModelFile | None
    drop_missing: bool = False
    new_heads: bool = True
    log: Any = None


def build(spec: Spec, seed: int | None = None, weights: str | Path | dict | ModelFile | Weights | None = None,
          heads: bool | None = None, check_memory: bool = True, optimize: bool | list[str] = False,
          compile: bool = False, profile: bool = False) -> torch.nn.Module:
    """A ``torch.nn.Module`` for ``spec``.

    - eval mode: ``forward`` returns the main logits ``(N, num_classes)``;
    - training mode with training-only heads: a named tuple, main output first, then each head;
    - ``model.loss(outputs, target)``, ``model.predict_proba(x)``, ``model.code`` (the source);
    - ``seed`` makes initialisation reproducible; ``weights`` loads a state_dict, a file saved
      by ``archc build -o`` or ``archc train`` (``.pt`` or ``.safetensors``), or a :class:`Weights`
      that says how (``Weights(path, drop_missing=True)`` with weights that lack the training-only
      heads builds without them; ``heads=False`` always does);
    - a classifier layer whose shape differs from the weights' (another class count) is initialised
      afresh from ``seed`` (0 when None), unless ``Weights(..., new_heads=False)``; every other
      tensor must fit.
    """
    load = weights if isinstance(weights, Weights) else Weights(weights)
    state = read_weights(load.source) if load.source is not None else None
    if heads is None:
        heads = True
        if load.drop_missing and state is not None:
            heads = False
    g = annotated_graph(spec)
    if check_memory:
        _check_memory(g, spec, heads)
    filename = next_filename(spec.name)
    gen = generate(g, spec, heads=heads, profile=profile and not optimize)
    cls = compile_source(gen, filename)
    if seed is not None:
        torch.manual_seed(seed)
    model = cls()
    model.code = gen.source
    model.archc = ArchcInfo(spec=plain(spec.document), module_paths=gen.module_paths, heads=heads)
    if state is not None:
        from .weights import load_weights

        for head in load_weights(model, state, g, spec, new_heads=load.new_heads, seed=seed):
            (load.log or _stderr)(head)
    if optimize:
        model = optimize_module(model, g, spec, None if optimize is True else list(optimize), profile=profile)
    if compile:
        model = compile_module(model)
    return model


def _stderr(line: Any) -> None:
    print(f"archc: {line}", file=sys.stderr, flush=True)


def save_model(model: torch.nn.Module, path: str | Path) -> Path:
    """Weights and the resolved spec in one file, reloadable with :func:`load_model`."""
    info = archc_info(model)
    return write_model_file(path, {"archc": __version__, "spec": info.spec, "heads": info.heads,
                                   "state_dict": model.state_dict()})


def load_model(path: str | Path, optimize: bool = False, compile: bool = False) -> torch.nn.Module:
    """Rebuild the module saved in ``path`` (no YAML file needed) and load its weights;
    ``optimize=True`` gives the inference module built from them."""
    mf = read_weights(path, what="")
    if mf.spec is None:
        raise BackendError([error(f"{path} holds weights but no spec (it was not written by 'archc build -o' or "
                                  "'archc train')", "", Location(str(path)),
                                  hint="give the spec: archcompiler.build(SPEC, weights=FILE)")])
    return build(embedded_spec(mf, file=str(path)), heads=True if mf.heads is None else mf.heads,
                 weights=Weights(mf, new_heads=False), optimize=optimize, compile=compile)
