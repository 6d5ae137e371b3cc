"""Feature maps as outputs: a spec's ``features:`` (``--features``) makes the network a feature extractor.

The chosen layers' outputs become the outputs (a dict, as torchvision's ``IntermediateLayerGetter`` and
timm's ``features_only`` give them) and the layers no chosen one depends on go. A feature is named by
the spec's name of a layer, row or block instance (``conv3_x``, ``layers/3``), by its torch module's
name (``layer2``, ``features.6``), or by a stage index (timm's ``out_indices``). The stages are the
spec's ``stages:`` or, without it, the last row at each reduction of the image. A sequence of tokens
becomes a D x H x W map (a ``to_map`` node: the leading class tokens dropped, the rest laid out row by
row), as timm lays out a vision transformer's features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..errors import Diagnostic, GraphError, Location, error
from ..ir import INPUT, OPS, schedule
from ..spec import Spec
from ..spec.base import suggest
from ..spec.rename import apply_rules
from ..util import shape_text
from .shapes import infer_shapes

MAX_PREFIX_TOKENS = 8          # class and distillation tokens before a transformer's positions


@dataclass(frozen=True)
class Stage:
    name: str                  # the spec's: a row, a block instance
    node: str                  # the node that holds its output


def select_features(g: nx.DiGraph) -> None:
    """With the spec's ``features:``, make ``g`` (shapes inferred) return those layers' outputs, in place:
    each chosen output (a map laid out from tokens where it is a sequence), the rest pruned. A name or
    index that names no layer or stage is a located error."""
    spec: Spec = g.graph["spec"]
    if not spec.features:
        return
    modules = _module_names(g, spec)
    stages = _stages(g, spec)
    chosen: dict[str, tuple[str, str, int | None]] = {}      # key -> (spec name, node, stage index)
    problems: list[Diagnostic] = []
    for choice in spec.features:
        try:
            key, name, node, index = _resolve(g, spec, choice.value, stages, modules, choice.loc)
        except GraphError as exc:
            problems += exc.errors
            continue
        if key in chosen or any(node == n for _, n, _ in chosen.values()):
            problems.append(error(f"feature {choice.value!r} is chosen twice", "features", choice.loc,
                                  hint="list each layer once"))
            continue
        chosen[key] = (name, node, index)
    if problems:
        raise GraphError(problems)
    outputs, features = {}, []
    for key, (name, node, index) in chosen.items():
        node = _as_map(g, spec, node, key)
        outputs[key] = {"node": node, "layer": name, "loss": None, "weight": 0.0, "training_only": False}
        features.append({"name": key, "layer": name, "node": node, "stage": index})
    keep = {INPUT}
    for out in outputs.values():
        keep |= nx.ancestors(g, out["node"]) | {out["node"]}
    dropped = [n for n in g.nodes if n not in keep]
    # a checkpoint of the whole network loads: the tensors of these modules are no longer the model's
    g.graph["dropped_modules"] = sorted({modules[n] for n in dropped})
    g.remove_nodes_from(dropped)
    for _, data in g.nodes(data=True):
        data["training_only"] = False
    g.graph["outputs"] = outputs
    g.graph["features"] = features
    g.graph["layer_output"] = {k: v for k, v in g.graph["layer_output"].items() if v in keep}
    infer_shapes(g)           # the maps laid out from tokens


def stage_list(g: nx.DiGraph, spec: Spec) -> list[dict[str, Any]]:
    """The stages a feature index chooses from, each with its shape: the spec's ``stages:``, or the last
    row at each reduction of the image (``archc flops --stages``)."""
    modules = _module_names(g, spec)
    return [{"index": i, "name": s.name, "module": _module_of(g, s.name, modules) or s.name,
             "shape": list(_map_shape(spec, g.nodes[s.node]["shape"])), "reduction": _reduction(g, spec, s.node)}
            for i, s in enumerate(_stages(g, spec))]


def _map_shape(spec: Spec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a feature taken at a node of ``shape``: a sequence's tokens laid out as a map."""
    found = _grid(spec, shape[0]) if len(shape) == 2 else None
    if found is None:
        return shape
    _, skip, height = found
    return (shape[1], height, (shape[0] - skip) // height)


def feature_rows(g: nx.DiGraph, batch: int = 1) -> list[dict[str, Any]]:
    """Each chosen feature (``archc flops``): its name, spec layer, map shape, reduction, and the
    parameters and operations that compute it (all the layers it depends on)."""
    spec: Spec = g.graph["spec"]
    out = []
    for f in g.graph.get("features", []):
        upstream = [g.nodes[n] for n in nx.ancestors(g, f["node"]) | {f["node"]}]
        macs = sum(d.get("macs", 0) for d in upstream) * batch
        out.append({"name": f["name"], "layer": f["layer"], "stage": f["stage"], "shape": list(g.nodes[f["node"]]["shape"]),
                    "reduction": _reduction(g, spec, f["node"]),
                    "params": sum(d["params"].total for d in upstream if "params" in d), "macs": macs, "flops": 2 * macs})
    return out


# ----------------------------------------------------------------------------- the stages

def _output_of(g: nx.DiGraph, spec: Spec, name: str) -> str | None:
    """The node holding the output of the spec's layer, row or block instance ``name``."""
    last = g.graph["layer_output"]
    if name in last:
        return last[name]
    instance = spec.instances.get(name)
    return last.get(instance.output) if instance is not None else None


def _reduction(g: nx.DiGraph, spec: Spec, node: str) -> int | None:
    """How many input pixels a position of ``node``'s map stands for along each side (a sequence's:
    its tokens laid out as the image's grid); None for a flat vector or an uneven grid."""
    shape = g.nodes[node]["shape"]
    _, height, width = spec.input
    if len(shape) == 3:
        h, w = shape[1], shape[2]
        if height % h == 0 and width % w == 0 and height // h == width // w:
            return height // h
        # an uneven map (AlexNet's 55 x 55, Inception's 35 x 35): its nominal reduction, as timm states it
        nominal = {2 ** round(math.log2(height / h)), 2 ** round(math.log2(width / w))}
        return nominal.pop() if len(nominal) == 1 else None
    if len(shape) == 2:
        found = _grid(spec, shape[0])
        return None if found is None else found[0]
    return None


def _grid(spec: Spec, tokens: int) -> tuple[int, int, int] | None:
    """(reduction, leading tokens, grid height) of a sequence of ``tokens`` over the input image: the
    fewest leading tokens (class, distillation) that leave a grid of the image's proportions."""
    _, height, width = spec.input
    for skip in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        n = tokens - skip
        for r in range(1, min(height, width) + 1):
            if height % r == 0 and width % r == 0 and (height // r) * (width // r) == n:
                return r, skip, height // r
    return None


def _stages(g: nx.DiGraph, spec: Spec) -> list[Stage]:
    if spec.stages:
        return _declared_stages(g, spec)
    stages: list[Stage] = []
    last_reduction = None
    for row in spec.rows:
        node = _output_of(g, spec, row)
        if node is None or node not in g.nodes:
            continue
        shape = g.nodes[node]["shape"]
        if g.nodes[node]["training_only"]:
            continue                # an auxiliary head
        if len(shape) != 3 or shape[1] * shape[2] == 1:
            if stages:
                break               # the head: pooled, flattened
            continue
        reduction = _reduction(g, spec, node)
        if reduction is None:
            continue
        if reduction == last_reduction:
            stages[-1] = Stage(row, node)
        else:
            stages.append(Stage(row, node))
        last_reduction = reduction
    return stages


def _declared_stages(g: nx.DiGraph, spec: Spec) -> list[Stage]:
    stages, problems = [], []
    for choice in spec.stages:
        name = str(choice.value)
        if name.endswith("/*"):
            row = name[:-2]
            names = [i for i in spec.instances if i.startswith(row + "/") and i[len(row) + 1:].isdigit()]
        else:
            names = [name]
        found = [(n, _output_of(g, spec, n)) for n in names]
        if not found or any(node is None for _, node in found):
            problems.append(error(f"stage {name!r} names no layer, row or block instance", "stages", choice.loc,
                                  hint=suggest(name, list(spec.rows)) or "a row, row/N or row/* (each instance)"))
            continue
        stages += [Stage(n, node) for n, node in found if node is not None]
    if problems:
        raise GraphError(problems)
    return stages


# ----------------------------------------------------------------------------- one feature

def _module_names(g: nx.DiGraph, spec: Spec) -> dict[str, str]:
    """Each node's torch module path (the spec's ``torch.rename`` rules applied; '/' and '.' separate)."""
    nodes = sorted(g.nodes, key=lambda n: g.nodes[n]["order"])
    try:
        renamed = apply_rules(spec.torch.rename, nodes)
    except ValueError as exc:
        raise GraphError([error(str(exc), "torch.rename")]) from None
    return {n: ".".join(p for p in name.replace("/", ".").split(".") if p) for n, name in zip(nodes, renamed)}


def _module_of(g: nx.DiGraph, name: str, modules: dict[str, str]) -> str | None:
    """The torch module that holds the spec's layer (row, instance) ``name`` and nothing else: the path its
    submodules share (the parameterless ops, which have none, do not count)."""
    mine = [modules[n] for n in g.nodes if (n == name or n.startswith(name + "/")) and OPS[g.nodes[n]["op"]].torch.module]
    if not mine:
        return None
    common = mine[0].split(".")
    for path in mine[1:]:
        parts = path.split(".")
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
    found = None
    while common:       # the shortest path that holds nothing else (features.1, not features.1.block)
        prefix = ".".join(common)
        theirs = [n for n in g.nodes if modules[n] == prefix or modules[n].startswith(prefix + ".")]
        if not all(n == name or n.startswith(name + "/") for n in theirs):
            break
        found, common = prefix, common[:-1]
    return found


def _by_module(g: nx.DiGraph, spec: Spec, text: str, modules: dict[str, str]) -> tuple[str, str] | None:
    """(spec name, node) of the torch module ``text`` (layer2, features.6): the spec layer its nodes share."""
    matched = [n for n in schedule(g) if modules.get(n) == text or modules.get(n, "").startswith(text + ".")]
    if not matched:
        return None
    parts = [n.split("/") for n in matched]
    k = 0
    while all(len(p) > k and p[k] == parts[0][k] for p in parts):
        k += 1
    prefix = "/".join(parts[0][:k])
    if prefix in g.nodes and len(matched) == 1:
        return g.nodes[prefix]["layer"], prefix
    node = _output_of(g, spec, prefix) if prefix else None
    return (prefix, node) if node is not None and node in matched else None


def _resolve(g: nx.DiGraph, spec: Spec, value: str | int, stages: list[Stage], modules: dict[str, str],
             loc: Location) -> tuple[str, str, str, int | None]:
    """(output key, spec name, node, stage index) of one ``features:`` entry."""
    if isinstance(value, int):
        if not -len(stages) <= value < len(stages):
            shown = [f"{i} {s.name} ({shape_text(_map_shape(spec, g.nodes[s.node]['shape']))})"
                     for i, s in enumerate(stages)]
            listed = ", ".join(shown if len(shown) <= 6 else [*shown[:3], "...", *shown[-2:]])
            raise GraphError([error(f"feature index {value} is out of range: the network has {len(stages)} "
                                    "stage(s)", "features", loc, value=value,
                                    hint=f"stages: {listed}" if stages else "give the spec 'stages:' or name the layers")])
        index = value % len(stages)
        s = stages[index]
        return _module_of(g, s.name, modules) or s.name, s.name, s.node, index
    for name in (value, value.replace(".", "/")):
        node = _output_of(g, spec, name)
        if node is not None:
            return value, name, node, None
    found = _by_module(g, spec, value, modules)
    if found is not None:
        return value, found[0], found[1], None
    names = set(spec.rows) | set(spec.instances) | {m.split(".")[0] for m in modules.values()}
    raise GraphError([error(f"feature {value!r} names no layer of {spec.name} (neither the spec's name of a "
                            "layer, row or block instance nor a torch module's)", "features", loc, value=value,
                            hint=suggest(value, names) or f"rows: {', '.join(spec.rows[:12])}")])


def _as_map(g: nx.DiGraph, spec: Spec, node: str, key: str) -> str:
    """``node`` itself when it holds an image; for a sequence, a ``to_map`` node after it."""
    shape = g.nodes[node]["shape"]
    if len(shape) == 3:
        return node
    data = g.nodes[node]
    found = _grid(spec, shape[0]) if len(shape) == 2 else None
    if found is None:
        what = "a flat vector" if len(shape) == 1 else f"{shape[0]} tokens that lay out as no grid of the input"
        if len(shape) == 4:
            what = "a clip (T x H x W x C; features of video networks are not supported yet)"
        raise GraphError([error(f"feature {key!r} ({data['layer']}) gives {shape_text(shape)}, {what}: a feature "
                                "is an image", "features", data["loc"],
                                hint="choose a layer before the head's pooling" if len(shape) != 4 else None)])
    _, skip, height = found
    name = f"{node}/map"
    g.add_node(name, op="to_map", attrs={"skip": skip, "height": height}, inputs=[node], layer=f"{data['layer']}/map",
               row=data["row"], group=data["group"], loc=data["loc"], order=(data["order"] // 8) * 8 + 7,
               role="map", spec_op="to_map", training_only=False)
    g.add_edge(node, name)
    return name
