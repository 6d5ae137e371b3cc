"""Building, saving and loading torch modules from specs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ...errors import BackendError, Location, error
from ...modelfile import embedded_spec, first_line, read_model_file
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


def build(spec: Spec, seed: int | None = None, weights: str | Path | None = None,
          drop_missing: bool = False, heads: bool | None = None, check_memory: bool = True,
          optimize: bool | list[str] = False, compile: bool = False, profile: bool = False) -> torch.nn.Module:
    """A ``torch.nn.Module`` for ``spec``.

    - eval mode: ``forward`` returns the main logits ``(N, num_classes)``;
    - training mode with training-only heads: a named tuple, main output first, then each head;
    - ``model.loss(outputs, target)``, ``model.predict_proba(x)``, ``model.code`` (the source);
    - ``seed`` makes initialisation reproducible; ``weights`` loads a state_dict or a file saved
      by ``archc build -o``; ``heads=False`` (or ``drop_missing=True`` with weights that lack
      them) builds without the training-only heads.
    """
    state = read_weights(weights) if weights is not None else None
    if heads is None:
        heads = True
        if drop_missing and state is not None:
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
        load_weights(model, state, g, spec, str(weights))
    if optimize:
        model = optimize_module(model, g, spec, None if optimize is True else list(optimize), profile=profile)
    if compile:
        model = compile_module(model)
    return model


def read_weights(path: str | Path | dict) -> dict[str, torch.Tensor]:
    """The state_dict in a weights file (or given as one), or a located error saying what is wrong."""
    if isinstance(path, dict):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in path.items()):
            raise BackendError([error("the weights are not a state_dict (a mapping of names to tensors)",
                                      "--weights")])
        return path
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackendError([error(f"no such weights file: {path}", "--weights", Location(str(path)))]) from None
    except Exception as exc:
        raise BackendError([error(f"cannot read weights from {path}: {first_line(exc)}", "--weights",
                                  Location(str(path)),
                                  hint="archc reads torch.save files of tensors (weights_only=True): a "
                                       "state_dict, or a dict holding one under 'state_dict'")]) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise BackendError([error(f"{path} holds no state_dict (a mapping of names to tensors)", "--weights",
                                  Location(str(path)))])
    return data


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], g: Any, spec: Spec,
                 source: str = "weights") -> None:
    """Load ``state`` strictly; a mismatch is reported as located lists of missing keys,
    unexpected keys and shape mismatches, each with the spec layer it belongs to."""
    own = model.state_dict()
    module_paths = archc_info(model).module_paths
    layer_of = {path: g.nodes[node]["layer"] for node, path in module_paths.items()}
    locs = {path: g.nodes[node]["loc"] for node, path in module_paths.items()}
    training_only = {path for node, path in module_paths.items() if g.nodes[node]["training_only"]}

    def owner(key: str) -> tuple[str, Location | None]:
        prefix = key.rsplit(".", 1)[0]
        return layer_of.get(prefix, "?"), locs.get(prefix)

    problems = []
    missing_heads = False            # a missing tensor belongs to a training-only head
    for key in own:
        if key not in state:
            layer, loc = owner(key)
            missing_heads = missing_heads or key.rsplit(".", 1)[0] in training_only
            problems.append(error(f"missing key {key} (layer {layer})", "weights", loc or Location(source),
                                  hint="the checkpoint lacks this tensor"))
        elif tuple(state[key].shape) != tuple(own[key].shape):
            layer, loc = owner(key)
            problems.append(error(f"shape mismatch for {key} (layer {layer}): checkpoint "
                                  f"{tuple(state[key].shape)}, model {tuple(own[key].shape)}", "weights",
                                  loc or Location(source)))
    for key in state:
        if key not in own:
            problems.append(error(f"unexpected key {key}", "weights", Location(source),
                                  hint="the model has no such tensor; wrong spec or rename rules?"))
    if problems:
        if missing_heads:
            problems.append(error("a checkpoint without the training-only heads loads with "
                                  "--drop-training-heads (drop_missing=True)", "weights", Location(source)))
        raise BackendError(problems)
    model.load_state_dict(state, strict=True)


def save_model(model: torch.nn.Module, path: str | Path) -> Path:
    """Weights and the resolved spec in one file, reloadable with :func:`load_model`."""
    from ...io import atomic_path

    info = archc_info(model)
    payload = {"archc": __version__, "spec": info.spec, "heads": info.heads,
               "state_dict": model.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_model(path: str | Path, optimize: bool = False, compile: bool = False) -> torch.nn.Module:
    """Rebuild the module saved in ``path`` (no YAML file needed) and load its weights;
    ``optimize=True`` gives the inference module built from them."""
    payload = read_model_file(path)
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise BackendError([error(f"{path} holds no state_dict", "state_dict", Location(str(path)))])
    return build(embedded_spec(payload, file=str(path)), heads=payload.get("heads", True), weights=state,
                 optimize=optimize, compile=compile)
