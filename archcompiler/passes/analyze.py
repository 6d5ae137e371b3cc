"""All static analysis in one call: the regenerated Table 1, totals, depth, memory, claims.

This is what ``archc flops`` prints and ``archcompiler.analyze`` returns.  Nothing here imports
torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from ..errors import SpecError, error
from ..ir import OPS, lower, schedule
from ..spec import Spec, load_spec
from ..util import without_gc
from .cost import annotate_cost
from .depth import network_depth
from .features import feature_rows, select_features
from .memory import annotate_memory
from .receptive_field import annotate_receptive_field
from .shapes import infer_shapes

CONVENTION = ("1 MAC = one multiply-add; FLOPs = 2 x MACs (as torch.utils.flop_counter.FlopCounterMode "
              "counts conv and linear); pooling, normalisation, activation, concat and add are "
              "counted apart as element operations; params = weights + biases (BatchNorm's affine "
              "weights included), buffers apart")
# added where the network has attention (ViT): what its count holds
ATTENTION_CONVENTION = ("; attention counts its q, k, v and output projections and the QK^T and AV products "
                        "(2 S^2 D multiply-adds per layer for S tokens of D features), as torchvision's _ops do; "
                        "FlopCounterMode sees those products only with autograd on and the math attention "
                        "backend (torch.nn.attention.sdpa_kernel(SDPBackend.MATH))")


def annotated_graph(spec: Spec) -> nx.DiGraph:
    """The IR of ``spec`` with shapes, cost and receptive fields on every node."""
    g = shaped_graph(spec)
    annotate_cost(g)
    annotate_receptive_field(g)
    return g


def shaped_graph(spec: Spec) -> nx.DiGraph:
    """The IR of ``spec`` with shapes, the spec's ``features:`` chosen (what every consumer builds on)."""
    g = infer_shapes(lower(spec))
    select_features(g)
    return g


def row_key(g: nx.DiGraph, node: str, depth: int) -> str:
    return "/".join(g.nodes[node]["layer"].split("/")[:depth])


def rows(g: nx.DiGraph, spec: Spec, batch: int = 1, depth: int = 1) -> list[dict[str, Any]]:
    """One entry per row of the spec (``depth=1``), or per finer level (``depth=2``: the layers
    inside each block instance, ...), in the order of the graph's schedule."""
    groups: dict[str, list[str]] = {}
    key_of: dict[str, str] = {}
    local_depth: dict[str, int] = {}       # layers with parameters on the longest path inside the row
    for n in schedule(g):
        if not g.nodes[n]["inputs"]:        # the network's input is no row
            continue
        key = key_of[n] = row_key(g, n, depth)
        groups.setdefault(key, []).append(n)
        here = 1 if OPS[g.nodes[n]["op"]].depth == "params" else 0
        local_depth[n] = here + max([local_depth[i] for i in g.nodes[n]["inputs"] if key_of.get(i) == key],
                                    default=0)
    out = []
    for name, nodes in groups.items():
        instance = spec.instances.get(name)
        last = nodes[-1]
        if instance is not None:        # (a row that features: cut short ends at its last kept node)
            last = g.graph["layer_output"].get(instance.output, last)
        first = g.nodes[nodes[0]]
        kinds = {g.nodes[n]["spec_op"] for n in nodes}
        if instance is not None:
            kind = instance.block
        elif name in g.graph["layer_output"]:
            kind = first["spec_op"]
        else:
            kind = "/".join(sorted(kinds))
        patch = ""
        if instance is None or not instance.from_table:
            windows = [n for n in nodes if OPS[g.nodes[n]["op"]].patch(g.nodes[n]["attrs"])]
            if windows:
                w = g.nodes[windows[-1]]
                patch = OPS[w["op"]].patch(w["attrs"])
        params = [g.nodes[n]["params"] for n in nodes]
        macs = sum(g.nodes[n]["macs"] for n in nodes)
        member = set(nodes)
        external = [i for n in nodes for i in g.nodes[n]["inputs"] if i not in member]
        entry = {
            "name": name,
            "type": kind,
            "patch": patch,
            "input": list(g.nodes[external[0]]["shape"]) if external else None,
            "output": list(g.nodes[last]["shape"]),
            "depth": max(local_depth[n] for n in nodes),
            "params": sum(p.total for p in params),
            "weights": sum(p.weights for p in params),
            "biases": sum(p.biases for p in params),
            "buffers": sum(p.buffers for p in params),
            "macs": macs * batch,
            "macs_per_sample": macs,
            "flops": 2 * macs * batch,
            "elementwise": sum(g.nodes[n]["elementwise"] for n in nodes) * batch,
            "training_only": all(g.nodes[n]["training_only"] for n in nodes),
            "columns": spec.built_columns(name) if instance is not None and instance.from_table else {},
            "args": dict(instance.args) if instance is not None and instance.from_table else {},
            "receptive_field": list(g.nodes[last]["rf"]["size"]),
            "activation_bytes": g.nodes[last].get("activation_bytes"),
        }
        out.append(entry)
    return out


def totals(g: nx.DiGraph, batch: int = 1, training: bool = False) -> dict[str, int]:
    nodes = [d for _, d in g.nodes(data=True) if training or not d["training_only"]]
    macs = sum(d["macs"] for d in nodes) * batch
    return {
        "params": sum(d["params"].total for d in nodes),
        "weights": sum(d["params"].weights for d in nodes),
        "biases": sum(d["params"].biases for d in nodes),
        "buffers": sum(d["params"].buffers for d in nodes),
        "macs": macs,
        "flops": 2 * macs,
        "elementwise": sum(d["elementwise"] for d in nodes) * batch,
    }


@without_gc
def stages(row_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inference rows grouped into stages: consecutive rows at one spatial resolution (GoogLeNet's
    stages 3, 4 and 5 are its 28x28, 14x14 and 7x7 rows)."""
    out: list[dict[str, Any]] = []
    for r in row_list:
        if r["training_only"]:
            continue
        shape = r["output"]
        size = "x".join(map(str, shape[1:])) if len(shape) in (3, 4) else f"{shape[0]} tokens" if len(shape) == 2 else "flat"
        if not out or out[-1]["resolution"] != size:
            out.append({"resolution": size, "rows": [], "params": 0, "macs": 0, "flops": 0})
        stage = out[-1]
        stage["rows"].append(r["name"])
        for key in ("params", "macs", "flops"):
            stage[key] += r[key]
    return out


def by_op(g: nx.DiGraph, batch: int = 1) -> dict[str, dict[str, int]]:
    """Inference totals per primitive op kind (conv2d, linear, max_pool2d, ...)."""
    out: dict[str, dict[str, int]] = {}
    for d in g.nodes.values():
        if d["training_only"] or not d["inputs"]:     # the input is no op that runs
            continue
        entry = out.setdefault(d["op"], {"count": 0, "params": 0, "macs": 0, "elementwise": 0})
        entry["count"] += 1
        entry["params"] += d["params"].total
        entry["macs"] += d["macs"] * batch
        entry["elementwise"] += d["elementwise"] * batch
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["macs"], -kv[1]["elementwise"], kv[0])))


def _profile(latency: Any) -> dict[str, Any] | None:
    """``analyze``'s ``latency`` argument as a machine profile (None: no prediction)."""
    from .machine import load_profile

    if latency is None or latency is False:
        return None
    if latency is True:
        return load_profile()
    if isinstance(latency, (str, Path)):
        return load_profile(latency)
    if isinstance(latency, dict) and isinstance(latency.get("kernels"), dict):
        return latency
    raise SpecError([error(f"latency must be a machine profile (its dict, or a path to its file) or True for "
                           f"this machine's, got {type(latency).__name__}", "latency")])


def analyze(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, batch: int = 1,
            depth: int = 1, input: tuple[int, int, int] | None = None, optimized: bool = False,
            train_memory: str | None = None, latency: dict[str, Any] | str | Path | bool | None = None) -> dict[str, Any]:
    """Everything ``archc flops --format json`` prints, as a dict.

    Keys: ``spec``, ``input`` [C, H, W], ``batch``, ``convention``, ``rows`` (``name``, ``type``,
    ``patch``, ``output`` [C, H, W], ``params``, ``macs``, ``flops``, ``depth``, ...), ``total``
    (inference: ``params``, ``macs``, ``flops``; and ``with_training_heads``), ``stages`` (totals
    per spatial resolution), ``by_op`` (totals per primitive op kind), ``depth``
    (``with_params``, ``with_pooling``), ``peak_activation_bytes``, ``receptive_field``; with
    ``latency`` (a machine profile: its dict, a path to its file, or True for this machine's, as
    ``archc flops --latency`` uses: ``archc calibrate``'s, or the rough one archc ships), each row's
    ``predicted_ms``, ``intensity`` and ``bound`` and a ``latency`` block (``machine``, ``threads``,
    ``predicted_ms``, ``working_set_bytes``,
    ``cache_bytes``, ``cold`` (and in words, ``cache_speed``), ``calibration_warning``: None, or why the profile is suspect,
    ``profile_note``: None, or that the profile is archc's shipped default, not this machine's); with
    ``train_memory``, a ``train_memory`` block; with the spec's ``features:``, ``features`` (each map's
    ``name``, ``layer``, ``stage``, ``shape``, ``reduction``, and the ``params``, ``macs`` and ``flops``
    that compute it).
    """
    overrides = _with_input(overrides, input)
    latency = _profile(latency)
    spec = load_spec(spec_or_path, overrides)
    g = annotated_graph(spec)
    removed = None
    if optimized:
        g, removed = _optimized(g, batch)
    training = None
    if train_memory is not None:
        from .memory import training_memory

        training = training_memory(g, batch=batch, optimizer=train_memory)
    predicted = cache = None
    if latency is not None:
        predicted, cache = _predicted(g, latency, batch, depth)
    peak = annotate_memory(g, batch=batch)
    final = _final(g)
    rf = g.nodes[final]["rf"] if final else None
    row_list = rows(g, spec, batch, depth)
    if predicted is not None:
        for r in row_list:
            p = predicted.get(r["name"], {"ms": 0.0, "intensity": 0.0, "bound": ""})
            r.update(predicted_ms=p["ms"], intensity=p["intensity"], bound=p["bound"])
    total = totals(g, batch)
    total["with_training_heads"] = totals(g, batch, training=True)
    return {
        "spec": spec.name,
        "file": spec.file,
        "input": list(spec.input),
        "batch": batch,
        "convention": CONVENTION + (ATTENTION_CONVENTION if any(OPS[d["op"]].mixes for _, d in g.nodes(data=True))
                                    else ""),
        "rows": row_list,
        **({"features": feature_rows(g, batch)} if g.graph.get("features") else {}),
        "stages": stages(rows(g, spec, batch, 1) if depth != 1 else row_list),
        "total": total,
        "by_op": by_op(g, batch),
        "depth": {"with_params": network_depth(g), "with_pooling": network_depth(g, with_pooling=True)},
        "peak_activation_bytes": peak,
        "schedule": ("the generated forward(): topological order, ties broken by declaration order; float32; "
                     "the input held throughout; views, eval-mode dropout and in-place activations share "
                     "memory; each op's transient workspace; a tensor freed after its last use"),
        "receptive_field": {"layer": final, "size": list(rf["size"]), "jump": list(rf["jump"]),
                            "start": list(rf["start"])} if rf else None,
        **({"optimized": removed} if optimized else {}),
        **({"train_memory": training} if training is not None else {}),
        **({"latency": {"machine": latency["name"], "threads": latency["threads"],
                        "predicted_ms": sum(p["ms"] for p in predicted.values()), **cache}}
           if predicted is not None else {}),
    }


def _optimized(g: nx.DiGraph, batch: int) -> tuple[nx.DiGraph, dict[str, Any]]:
    """The inference graph after the optimizing passes, and what they removed (passes, MACs,
    element operations, parameters)."""
    from .optimize import optimize

    before = totals(g, batch)
    g = optimize(g)
    after = totals(g, batch)
    return g, {"passes": g.graph.get("optimizations", []),
               "macs": before["macs"] - after["macs"], "elementwise": before["elementwise"] - after["elementwise"],
               "params": before["params"] - after["params"]}


def _predicted(g: nx.DiGraph, latency: dict[str, Any], batch: int,
               depth: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each row's predicted latency from the machine profile, and the cache block: the working set
    against the cache, and whether the profile is suspect or archc's shipped default."""
    from .latency import cache_speed, cache_use, predict_rows, unsteady
    from .machine import default_note

    predicted = predict_rows(g, latency, batch, depth)
    cache = {**cache_use(g, latency, batch), "calibration_warning": unsteady(latency),
             "profile_note": default_note(latency)}
    cache["cache_speed"] = cache_speed(cache["cold"])
    return predicted, cache


def _final(g: nx.DiGraph) -> str | None:
    """The node whose receptive field the report gives: the main output, or with ``features:`` the
    deepest feature map."""
    ends = [o["node"] for o in g.graph["outputs"].values() if not o["training_only"]]
    return (ends[-1] if g.graph.get("features") else ends[0]) if ends else None


def _with_input(overrides: dict | list | None, input: tuple[int, int, int] | None) -> dict | list | None:
    if input is None:
        return overrides
    if isinstance(overrides, list):
        return [*overrides, f"input=[{', '.join(map(str, input))}]"]
    return {**(overrides or {}), "input": list(input)}
