"""Shape inference: every node gets ``shape`` (per sample), every edge the shape it carries."""

from __future__ import annotations

import networkx as nx

from ..errors import GraphError, error
from ..ir import OPS, ShapeError, schedule
from ..util import shape_text


def _fmt(shape: tuple[int, ...]) -> str:
    return shape_text(shape)


def _key(join: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """What the inputs of an op with this ``join`` must agree on: height and width when stacked
    along channels, the whole shape when summed."""
    return tuple(shape[1:]) if join == "stack" else tuple(shape)


def _common_text(join: str, key: tuple[int, ...]) -> str:
    return "x".join(map(str, key)) if join == "stack" else _fmt(key)


def _odd_inputs(join: str | None, ins: list[tuple[int, ...]]) -> tuple[tuple, tuple] | None:
    """For the inputs of an op that joins images (``OpDef.join``) and disagree: the size most
    inputs share (the first input's on a tie) and one input shape with it; None when they agree."""
    if join is None or len(ins) < 2 or any(len(s) != 3 for s in ins):
        return None
    keys = [_key(join, s) for s in ins]
    if len(set(keys)) == 1:
        return None
    common = max(keys, key=lambda k: (keys.count(k), -keys.index(k)))
    return common, ins[keys.index(common)]


def _channel_source(g: nx.DiGraph, node: str) -> str:
    """The layer whose op sets the channel count ``node`` carries: back along single inputs while
    the channels stay the same (BatchNorm, activations, pooling keep them; a conv's ``out`` sets them)."""
    while True:
        d = g.nodes[node]
        if len(d["inputs"]) != 1:
            return d["layer"]
        before = g.nodes[d["inputs"][0]]["shape"]
        if len(before) != 3 or before[0] != d["shape"][0]:
            return d["layer"]
        node = d["inputs"][0]


def _mismatch_hint(g: nx.DiGraph, data: dict, source: str, got: tuple[int, ...], majority: tuple[int, ...]) -> str:
    """What to check when input ``source`` of ``data`` gives ``got`` and the others ``majority``:
    the ``out`` of the layer that sets its channels when only the channel counts differ; the
    windows before it when the height and width differ."""
    layer = g.nodes[source]["layer"]
    channels = OPS[data["op"]].join == "sum" and got[0] != majority[0]
    spatial = got[1:] != majority[1:]
    need = f"{data['spec_op']} needs inputs of one {'height and width' if OPS[data['op']].join == 'stack' else 'shape'}"
    if channels and not spatial:
        producer = _channel_source(g, source)
        via = "" if producer == layer else f", which gives {layer} its {got[0]} channels"
        return f"{need}: the channels differ ({got[0]} against {majority[0]}): check the out of {producer}{via}"
    also = "the out, " if channels else "the "
    return f"{need}: check {also}kernel, stride and padding of {layer} and the layers before it"


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
        op = OPS[data["op"]]
        odd = _odd_inputs(op.join, ins)
        if odd:
            # blame the branch whose size differs, at its own line; carry on with the size the
            # others agree on, so every module with the same problem is reported too
            common, majority = odd
            for i in (k for k, s in enumerate(ins) if _key(op.join, s) != common):
                source = g.nodes[data["inputs"][i]]
                problems.append(error(
                    f"{source['layer']} gives {_fmt(ins[i])}, but the other inputs of {data['spec_op']} "
                    f"{data['layer']} are {_common_text(op.join, common)}", source["layer"], source["loc"],
                    hint=_mismatch_hint(g, data, data["inputs"][i], ins[i], majority)))
            agreeing = [(s[0], *common) if op.join == "stack" else majority for s in ins]
            data["shape"] = tuple(op.shape(data["attrs"], agreeing))
            continue
        try:
            data["shape"] = tuple(op.shape(data["attrs"], ins))
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
