"""Weights into a built module: which tensors fit, which classifier layers start afresh, what is frozen.

Facts come from the graph, never from names: a classifier layer is the last parametrised layer
before one of the spec's outputs (``g.graph["outputs"]``, the training-only heads' included), and
"everything up to LAYER" follows the plan the generated ``forward()`` runs.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import BackendError, Diagnostic, Location, error
from ...ir.plan import plan
from ...modelfile import ModelFile, shown
from ...spec import Spec
from .info import archc_info

SHOWN = 3          # of each kind of mismatch, the first SHOWN are listed, then "and N more"


@dataclass(frozen=True)
class NewHead:
    """A classifier layer initialised afresh because its shape differs from the weights'."""

    layer: str                       # the spec's name for it
    path: str                        # its module path
    shape: tuple[int, ...]           # its weight's shape in the model
    was: tuple[int, ...]             # and in the weights file
    source: str                      # the weights file
    seed: int

    def __str__(self) -> str:
        return (f"new head {self.layer}: {self.shape} in the model, {self.was} in {self.source}; "
                f"initialised afresh (seed {self.seed})")


def module_paths(model: torch.nn.Module) -> dict[str, str]:
    """IR node -> module path (the prefix of its state_dict keys), for the parametrised nodes."""
    return archc_info(model).module_paths


def _parametrised(g: Any, node: str) -> bool:
    p = g.nodes[node].get("params")
    return p is not None and (p.weights + p.biases) > 0


def classifier_nodes(g: Any) -> list[str]:
    """The layers that produce the outputs' logits: for each output, the last parametrised layer(s)
    before it (following its inputs back until a layer with weights)."""
    found: list[str] = []
    for out in g.graph["outputs"].values():
        todo, seen = [out["node"]], set()
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            if _parametrised(g, node):
                if node not in found:
                    found.append(node)
                continue
            todo.extend(g.nodes[node].get("inputs", []))
    return found


def _owner(key: str, by_path: dict[str, str]) -> str | None:
    if key in by_path:                  # a node whose path is a parameter itself (ConvNeXt's layer scale)
        return by_path[key]
    prefix = key.rsplit(".", 1)[0] if "." in key else ""
    return by_path.get(prefix)


def part(model: torch.nn.Module, path: str) -> torch.nn.Module | torch.nn.Parameter:
    """What a node's path names in the built module: a submodule, or (ConvNeXt's layer scale,
    a parameter registered on its block, as torchvision names it) a parameter."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return model.get_parameter(path)


def state_at(model: torch.nn.Module, path: str) -> dict[str, torch.Tensor]:
    """The state_dict entries of the node at ``path``, by their full keys."""
    owner = part(model, path)
    if isinstance(owner, torch.nn.Parameter):
        return {path: owner.detach()}
    return {f"{path}.{k}": v for k, v in owner.state_dict().items()}


def _kind(t: torch.Tensor) -> str:
    """What a tensor's values are, for loading: torch casts a float16 tensor to float32 (the same kind),
    but would cast a complex one to real (dropping a part), integers or booleans to weights."""
    if t.is_complex():
        return "complex"
    return "floating-point" if t.is_floating_point() else "boolean" if t.dtype == torch.bool else "integer"


def _capped(problems: list[Diagnostic], kind: str, where: Location) -> list[Diagnostic]:
    if len(problems) <= SHOWN + 1:
        return problems
    return [*problems[:SHOWN], error(f"... and {len(problems) - SHOWN} more {kind}", "weights", where)]


def load_weights(model: torch.nn.Module, weights: ModelFile, g: Any, spec: Spec, *, new_heads: bool = True,
                 seed: int | None = None) -> list[NewHead]:
    """Load ``weights`` into ``model``. Every tensor must fit, except the classifier layers' when
    ``new_heads``: a classifier layer whose shape changed (another class count) is initialised
    afresh, seeded by ``seed`` (0 when None). Returns those layers (``str()``: one line each). Any
    other mismatch is an error naming the first layer that differs (then at most a few of each
    kind, and a count); a checkpoint of another spec is said once, with what to do instead."""
    fit = _Fit.of(model, weights, g, new_heads)
    if fit.missing or fit.unexpected or fit.shapes or fit.kinds:
        if weights.spec_name and weights.spec_name != spec.name:
            raise BackendError([fit.other_spec(weights, spec)])
        raise BackendError(fit.problems(spec))
    state, own, renew = fit.state, fit.own, fit.renew
    notes = []
    if renew:
        notes = _renew(model, [p for p in dict.fromkeys(k.rsplit(".", 1)[0] for k in own) if p in renew],
                       state, own, fit.by_path, g, fit.label, 0 if seed is None else seed)
        own = model.state_dict()
        state = {k: (own[k] if k.rsplit(".", 1)[0] in renew else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return notes


@dataclass
class _Fit:
    """How a checkpoint's tensors fit a model's: the keys each lacks, the shapes and kinds of values
    that differ, and the classifier layers that start afresh."""
    g: Any
    label: str                      # the checkpoint, as messages name it
    state: dict[str, Any]           # the checkpoint's tensors (less the layers a feature extractor dropped)
    own: dict[str, Any]             # the model's
    by_path: dict[str, str]         # module path -> IR node
    differ: list[str]               # keys in both whose shapes differ
    renew: set[str]                 # the classifier layers initialised afresh (module paths)
    missing: list[str]
    unexpected: list[str]
    shapes: list[str]               # shape mismatches that are refused (not renewed)
    kinds: list[str]                # values of another kind (integers for weights, complex numbers)

    @classmethod
    def of(cls, model: torch.nn.Module, weights: ModelFile, g: Any, new_heads: bool) -> _Fit:
        state, own = weights.state_dict, model.state_dict()
        paths = module_paths(model)
        heads = {paths[n] for n in classifier_nodes(g) if n in paths}
        differ = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        renew = {k.rsplit(".", 1)[0] for k in differ} & heads if new_heads else set()
        missing = [k for k in own if k not in state]
        # a feature extractor (features:) loads the whole network's checkpoint: the layers it dropped are left out
        dropped = set(g.graph.get("dropped_modules", ()))
        state = {k: v for k, v in state.items() if k in own or k.rsplit(".", 1)[0] not in dropped}
        unexpected = [k for k in state if k not in own]
        shapes = [k for k in differ if k.rsplit(".", 1)[0] not in renew]
        # values of another kind are not cast: refused like a shape
        kinds = [k for k in own if k in state and k not in differ and _kind(state[k]) != _kind(own[k])]
        return cls(g, weights.label, state, own, {path: node for node, path in paths.items()}, differ, renew,
                   missing, unexpected, shapes, kinds)

    def layer(self, key: str) -> tuple[str, Location]:
        """The spec layer that owns tensor ``key``, and its place in the spec."""
        node = _owner(key, self.by_path)
        return (self.g.nodes[node]["layer"], self.g.nodes[node]["loc"]) if node else ("?", Location(self.label))

    def first_difference(self, among: list[str]) -> tuple[str, Location, str]:
        """The layer of the first tensor (in the model's order) among ``among`` or missing, its
        place in the spec, and what differs."""
        state, own, label = self.state, self.own, self.label
        differing = set(self.missing) | set(among)
        first = next((k for k in own if k in differing), None)
        if first is None:
            return "?", Location(label), f"{label} has tensors the model lacks, first {shown(self.unexpected[0])}"
        name, loc = self.layer(first)
        if first in self.missing:
            return name, loc, f"{first} is not in {label}"
        if first in self.kinds:
            return name, loc, (f"{first}: {_kind(state[first])} values ({state[first].dtype}) in {label}, "
                               f"{_kind(own[first])} in the model")
        return name, loc, f"{first}: {tuple(state[first].shape)} in {label}, {tuple(own[first].shape)} in the model"

    def other_spec(self, weights: ModelFile, spec: Spec) -> Diagnostic:
        """A checkpoint of another spec, said the same whatever the command: every tensor that does
        not fit counts, the classifier layers' too (a new head is for a checkpoint of the same network)."""
        label = self.label
        held = f"spec {weights.spec_name}" + (f" (from {shown(weights.spec_file)})" if weights.spec_file else "")
        name, _, why = self.first_difference(self.differ + self.kinds)
        count = len(self.missing) + len(self.unexpected) + len(self.differ) + len(self.kinds)
        return error(
            f"{label} holds {held}, but the command was given spec {spec.name} ({spec.file}): "
            f"{count} tensors do not fit; the "
            f"first layer that differs is {name} ({why})", "--weights", Location(label),
            hint=f"pass the checkpoint itself as SPEC (archc predict {label} IMAGE ..., archc evaluate "
                 f"{label} --data DIR), or give the spec it was trained with")

    def problems(self, spec: Spec) -> list[Diagnostic]:
        """Every mismatch, the first layer that differs first, then at most a few of each kind."""
        state, own, label, source = self.state, self.own, self.label, Location(self.label)
        name, loc, why = self.first_difference(self.shapes + self.kinds)
        problems = [error(f"{label} does not fit spec {spec.name}: the first layer that differs is {name} ({why})",
                          "weights", loc)]
        shape_list, kind_list, missing_list = [], [], []
        for k in self.shapes:
            name, loc = self.layer(k)
            shape_list.append(error(f"shape mismatch for {k} (layer {name}): checkpoint {tuple(state[k].shape)}, "
                                    f"model {tuple(own[k].shape)}", "weights", loc))
        for k in self.kinds:
            name, loc = self.layer(k)
            kind_list.append(error(f"values of another kind for {k} (layer {name}): checkpoint {_kind(state[k])} "
                                   f"({state[k].dtype}), model {_kind(own[k])} ({own[k].dtype})", "weights", loc))
        for k in self.missing:
            name, loc = self.layer(k)
            missing_list.append(error(f"missing key {k} (layer {name})", "weights", loc,
                                      hint=f"{label} lacks this tensor"))
        unexpected_list = [error(f"unexpected key {shown(k)}", "weights", source,
                                 hint="the model has no such tensor; wrong spec or rename rules?")
                           for k in self.unexpected]
        problems += _capped(shape_list, "shape mismatches", source)
        problems += _capped(kind_list, "tensors of another kind", source)
        problems += _capped(missing_list, "missing keys", source)
        problems += _capped(unexpected_list, "unexpected keys", source)
        nodes = [_owner(k, self.by_path) for k in self.missing]
        if self.missing and all(n is not None and self.g.nodes[n]["training_only"] for n in nodes):
            problems.append(error(f"{label} lacks only the training-only heads: it loads with "
                                  "--drop-training-heads (drop_missing=True)", "weights", source))
        return problems


def _renew(model: torch.nn.Module, paths: list[str], state: dict, own: dict, by_path: dict[str, str], g: Any,
           label: str, seed: int) -> list[NewHead]:
    """Initialise the modules at ``paths`` afresh, as the spec's ``init`` says, from ``seed``."""
    notes = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for path in paths:
            module = model.get_submodule(path)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            init = getattr(type(model), "init_weights", None)
            if init is not None:        # the spec's init rules, applied to this module alone
                init(types.SimpleNamespace(INIT=model.INIT, modules=lambda m=module: [m]))
            key = next(k for k in own if k.rsplit(".", 1)[0] == path and k in state)
            notes.append(NewHead(g.nodes[by_path[path]]["layer"], path, tuple(own[key].shape),
                                 tuple(state[key].shape), label, seed))
    return notes


def has_training_heads(spec: Spec, state: dict[str, Any]) -> bool:
    """Whether ``state`` holds any tensor of the spec's training-only layers (a published
    checkpoint may or may not keep them)."""
    from ...passes import annotated_graph
    from .codegen import generate

    g = annotated_graph(spec)
    gen = generate(g, spec, heads=True)
    training = {path for node, path in gen.module_paths.items() if g.nodes[node]["training_only"]}
    return any(k.rsplit(".", 1)[0] in training for k in state)


def layer_names(g: Any) -> list[str]:
    names = []
    for n in g.nodes:
        for name in (g.nodes[n].get("layer"), g.nodes[n].get("row")):
            if name and name != "input" and name not in names:
                names.append(name)
    return names


def freeze(model: torch.nn.Module, g: Any, spec: Spec, layer: str, heads: bool = True,
           keep: set[str] | frozenset[str] = frozenset()) -> tuple[list[torch.nn.Module], list[str]]:
    """Freeze everything up to and including ``layer`` (a spec layer or block name), in the order
    ``forward()`` runs, except the modules at the paths in ``keep`` (new heads, which must learn):
    their parameters stop training (``requires_grad=False``). Returns the frozen modules (the
    caller keeps them in eval mode while training: BatchNorm keeps its statistics) and the paths in
    ``keep`` that were spared."""
    from ...spec.base import suggest

    order = plan(g, heads=heads).order
    hits = [i for i, n in enumerate(order) if layer in (g.nodes[n].get("layer"), g.nodes[n].get("row"))
            or str(g.nodes[n].get("layer", "")).startswith(layer + "/")]
    if not hits:
        raise BackendError([error(f"--freeze {layer}: the spec {spec.name} has no layer {layer!r}", "--freeze",
                                  Location(spec.file), hint=suggest(layer, layer_names(g)))])
    paths = module_paths(model)
    frozen, spared = [], []
    for node in order[: hits[-1] + 1]:
        if node not in paths:
            continue
        if paths[node] in keep:
            spared.append(paths[node])
            continue
        module = part(model, paths[node])
        if isinstance(module, torch.nn.Parameter):
            module.requires_grad_(False)
            continue
        for p in module.parameters():
            p.requires_grad_(False)
        frozen.append(module)
    return frozen, spared
