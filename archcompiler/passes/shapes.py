"""Shape inference: every node gets ``shape`` (per sample), every edge the shape it carries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import networkx as nx

from ..errors import Diagnostic, GraphError, error
from ..ir import INPUT, OPS, ShapeError, schedule
from ..ops import TooSmall
from ..util import shape_text

# the search for the smallest input that works (a hint when the input is too small): at most this
# many shape inferences (each about a millisecond for GoogLeNet), square sides up to MAX_SIDE
SEARCH_TRIES = 20
MAX_SIDE = 4096


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


def _accepts(op: Any, attrs: dict, ins: list[tuple[int, ...]]) -> bool:
    """Whether the op's own shape rule takes these inputs."""
    try:
        op.shape(attrs, ins)
    except ShapeError:
        return False
    return True


def infer_shapes(g: nx.DiGraph) -> nx.DiGraph:
    """Annotate ``g`` in place (and return it); raise :class:`GraphError` with every located
    problem, each at the spec line of the layer that caused it."""
    problems = []
    too_small = None                     # the index in problems of the first window left with no output
    for node in schedule(g):
        data = g.nodes[node]
        ins = [g.nodes[i].get("shape") for i in data["inputs"]]
        if any(s is None for s in ins):
            data["shape"] = None         # an input already failed; do not pile up errors
            continue
        op = OPS[data["op"]]
        odd = _odd_inputs(op.join, ins)
        if odd and not _accepts(op, data["attrs"], ins):     # (inputs that broadcast, as an add's may: no problem)
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
            if isinstance(exc, TooSmall) and too_small is None:
                too_small = len(problems)
            problems.append(error(f"{exc}", data["layer"], data["loc"],
                                  hint=f"inputs: {inputs}" if inputs else None))
    if problems:
        if too_small is not None:
            problems[too_small] = _with_smallest_input(g, problems[too_small])
        raise GraphError(problems)
    for u, v in g.edges:
        g.edges[u, v]["shape"] = g.nodes[u]["shape"]
    return g


def _fits(g: nx.DiGraph, input_shape: tuple[int, ...]) -> bool:
    """Whether every node of ``g`` takes its inputs when the network's input is ``input_shape``
    (computed aside: ``g`` is left as it is)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for node in schedule(g):
        data = g.nodes[node]
        if node == INPUT:
            shapes[node] = input_shape
            continue
        ins = [shapes[i] for i in data["inputs"]]
        op = OPS[data["op"]]
        if _odd_inputs(op.join, ins):
            return False
        try:
            shapes[node] = tuple(op.shape(data["attrs"], ins))
        except ShapeError:
            return False
    return True


def smallest_input(g: nx.DiGraph) -> tuple[tuple[int, ...], bool] | None:
    """The smallest square input (C, S, S), with the channels of ``g``'s input, whose shapes all work,
    searched upwards from the input ``g`` has, and whether the search got to one side (S - 1 fails):
    False when :data:`SEARCH_TRIES` shape inferences ran out first (then S works, a smaller one may).
    None when the input is no image, when no side up to :data:`MAX_SIDE` works, or on any surprise
    (this only makes a hint). Doubles the side until one works, then halves the gap: a binary search,
    exact where every larger input works too, as for convolutions and pooling."""
    try:
        if INPUT not in g:
            return None
        shape = tuple(g.nodes[INPUT]["attrs"]["shape"])
        if len(shape) != 3:
            return None
        c, h, w = shape
        low, high, tries = max(min(h, w), 0), None, 0      # low: a side that fails
        side = max(h, w, 1)
        while high is None and side < MAX_SIDE and tries < SEARCH_TRIES:
            side = min(side * 2, MAX_SIDE)
            tries += 1
            if _fits(g, (c, side, side)):
                high = side
            else:
                low = side
        if high is None:
            return None
        while high - low > 1 and tries < SEARCH_TRIES:
            mid = (low + high) // 2
            tries += 1
            if _fits(g, (c, mid, mid)):
                high = mid
            else:
                low = mid
        return (c, high, high), high - low == 1
    except Exception:           # noqa: BLE001 - a hint must never turn one error into another
        return None


def _with_smallest_input(g: nx.DiGraph, problem: Diagnostic) -> Diagnostic:
    """``problem`` (a window left with no output) with the smallest input that works in its hint."""
    found = smallest_input(g)
    if found is None:
        return problem
    shape, exact = found
    what = "the smallest square input this network takes is" if exact else "a square input that works is"
    fix = f"{what} {_fmt(shape)}: --set input=[{','.join(map(str, shape))}]"
    return replace(problem, hint=f"{problem.hint}; {fix}" if problem.hint else fix)
