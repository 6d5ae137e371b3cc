"""Shape inference: every node gets ``shape`` (per sample), every edge the shape it carries."""

from __future__ import annotations

import networkx as nx

from ..errors import GraphError, error
from ..ir import OPS, ShapeError, schedule
from ..util import shape_text


def _fmt(shape: tuple[int, ...]) -> str:
    return shape_text(shape)


def _key(op: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[1:]) if op == "concat" else tuple(shape)


def _common_text(op: str, key: tuple[int, ...]) -> str:
    return "x".join(map(str, key)) if op == "concat" else _fmt(key)


def _odd_inputs(op: str, ins: list[tuple[int, ...]]) -> tuple[tuple, tuple] | None:
    """For concat (height and width) and add (whole shape) inputs that disagree: the size most
    inputs share (the first input's on a tie) and one input shape with it; None when they agree."""
    if op not in ("concat", "add") or len(ins) < 2 or any(len(s) != 3 for s in ins):
        return None
    keys = [_key(op, s) for s in ins]
    if len(set(keys)) == 1:
        return None
    common = max(keys, key=lambda k: (keys.count(k), -keys.index(k)))
    return common, ins[keys.index(common)]


def infer_shapes(g: nx.DiGraph) -> nx.DiGraph:
    """Annotate ``g`` in place (and return it); raise :class:`GraphError` with every located
    problem, each at the spec line of the layer that caused it."""
    problems = []
    for node in schedule(g):
        data = g.nodes[node]
        ins = [g.nodes[i].get("shape") for i in data["inputs"]]
        if any(s is None for s in ins):
            data["shape"] = None         # an input already failed; do not pile up errors
            continue
        odd = _odd_inputs(data["op"], ins)
        if odd:
            # blame the branch whose size differs, at its own line; carry on with the size the
            # others agree on, so every module with the same problem is reported too
            common, majority = odd
            for i in (k for k, s in enumerate(ins) if _key(data["op"], s) != common):
                source = g.nodes[data["inputs"][i]]
                what = "height and width" if data["op"] == "concat" else "shape"
                problems.append(error(
                    f"{source['layer']} gives {_fmt(ins[i])}, but the other inputs of {data['spec_op']} "
                    f"{data['layer']} are {_common_text(data['op'], common)}", source["layer"], source["loc"],
                    hint=f"{data['spec_op']} needs inputs of one {what}: check the kernel, stride and padding "
                         f"of {source['layer']} and the layers before it"))
            data["shape"] = (sum(s[0] for s in ins), *majority[1:]) if data["op"] == "concat" else majority
            continue
        try:
            data["shape"] = tuple(OPS[data["op"]].shape(data["attrs"], ins))
        except ShapeError as exc:
            data["shape"] = None
            inputs = ", ".join(f"{i} ({_fmt(s)})" for i, s in zip(data["inputs"], ins))
            problems.append(error(f"{exc}", data["layer"], data["loc"],
                                  hint=f"inputs: {inputs}" if inputs else None))
    if problems:
        raise GraphError(problems)
    for u, v in g.edges:
        g.edges[u, v]["shape"] = g.nodes[u]["shape"]
    return g
