"""The window attention of Swin, Swin V2 (its continuous position bias) and MaxViT (block and grid partitions,
the shift and its mask), read back as one archc op when its constants (the scale, the position bias, the
shift's mask) are the op's."""

from __future__ import annotations

from typing import Any

from ...ops import FROM_ONNX
from .fold import _attrs
from .graph import Node, _f32, _Graph, _only_reader, _slice, _standard


def _relative_index(window: int) -> Any:
    """Swin's relative position index, window^2 x window^2 (as archc's WindowAttention builds it)."""
    import numpy as np

    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def _shift_mask(height: int, width: int, window: int, shift: tuple[int, int]) -> Any:
    """The mask of Swin's shifted windows (-100 between positions rolled in from different sides), as
    archc's WindowAttention (and torchvision) builds it: windows x 1 x window^2 x window^2."""
    import numpy as np

    sh, sw = shift
    labels = np.zeros((height, width), dtype=np.float32)
    count = 0
    for h0, h1 in ((0, height - window), (height - window, height - sh), (height - sh, height)):
        for w0, w1 in ((0, width - window), (width - window, width - sw), (width - sw, width)):
            labels[h0:h1, w0:w1] = count
            count += 1
    labels = labels.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    labels = labels.reshape(-1, window * window)
    mask = labels[:, None, :] - labels[:, :, None]
    return np.where(mask != 0, np.float32(-100.0), np.float32(0.0))[:, None]


# the ops archc's WindowAttention is written as: pad, roll (Slice and Concat), the windows cut out
# (Reshape, Transpose), the projections, heads, scaled product (V2: q and k normalised, ReduceL2, Clip,
# Expand, Div), position bias and mask, softmax, and back; a reader of another op type is outside it
_WINDOW_OPS = {"Transpose", "Reshape", "Slice", "Concat", "Pad", "Gather", "Mul", "MatMul", "Add", "Softmax",
               "Squeeze", "Unsqueeze", "ReduceL2", "Clip", "Expand", "Div"}
MAX_WINDOW_NODES = 96


def _window_step(node: Any, ctx: _Graph) -> bool:
    """The window attention of Swin, Swin V2 and MaxViT on a channels-last view, as the exporter writes
    archc's WindowAttention: every reader of the view and what they compute (ops of _WINDOW_OPS that read
    only values of the pattern and constants) up to the one value read from outside, channels-last again,
    with one qkv projection (C x 3C and 3C), one output projection (C x C and C), one softmax over
    windows x heads x N x N (N = window^2), the windows cut out as windows (or MaxViT's grid), and a
    position bias heads x N x N: a table that the relative position index maps (read back from it), or
    (V2, cosine attention) the exporter's steps of the position MLP; q scaled by (C / heads)^-0.5 (Swin),
    k by C^-0.5 (MaxViT), or (V2) q and k normalised and the product times exp(logit_scale); for shifted
    windows, a roll (Slice, Concat) before and after and the mask archc builds for that shift: one
    ``window_attention`` layer."""
    if node.op_type not in ("Reshape", "Slice", "Pad") or not node.input or node.input[0] not in ctx.last:
        return False
    src = node.input[0]
    full = ctx.shapes.get(src, ())
    if len(full) != 4 or full[0] != 1:
        return False
    _, height, width, c = full
    found = _window_region(ctx, src)
    if found is None:
        return False
    region, inside, out = found
    sizes = _window_sizes(ctx, region, c)
    if sizes is None:
        return False
    heads, n, window = sizes
    ph, pw = -(-height // window) * window, -(-width // window) * window
    cosine = any(r.op_type == "ReduceL2" for r in region)
    bias = _position_bias(ctx, region, inside, (window, heads, n), cosine)
    if bias is None:
        return False
    bias_nodes, extra, masks = bias
    region_inputs = inside | {o for b in bias_nodes for o in b.output}
    if any(i and i not in region_inputs and i not in ctx.consts for r in region for i in r.input):
        return False
    maxvit = _scaled_k(ctx, region, inside, (c, heads), cosine, extra)
    params = _window_projections(ctx, region, c, maxvit, cosine) if maxvit is not None else None
    if params is None:
        return False
    grid = _partition(ctx, region, window, ph, pw)
    if grid is None:
        return False
    shift = _shift(ctx, region, window, ph, pw, masks)
    if shift is None:
        return False
    ctx.skip.update(id(r) for r in [*region, *bias_nodes])
    ctx.skip.discard(id(node))
    fields: dict[str, Any] = {"heads": heads, "window": window}
    if maxvit:
        fields.update(({"grid": True} if grid else {}), layout="maxvit")
        if (ph, pw) != (height, width):
            fields["pad"] = True
    else:
        fields.update(shift=shift, pad=True, **({"cosine": True} if cosine else {}))
    _emit_windows(ctx, (src, out), fields, extra, params, maxvit)
    return True


def _window_region(ctx: _Graph, src: str) -> tuple[list[Any], set[str], str] | None:
    """The readers of the channels-last view ``src`` and what they compute, up to the one value read from
    outside (a reader of another op type than _WINDOW_OPS, or a Transpose back to channels first), which has
    the view's shape: (the nodes, the values they compute and ``src``, that value); None where there is no
    one such value or the nodes are more than MAX_WINDOW_NODES."""
    full = ctx.shapes.get(src, ())
    region, outside, inside, seen = [], [], {src}, set()
    frontier = [src]
    while frontier:
        value = frontier.pop()
        for r in ctx.readers.get(value, []):
            if r.op_type not in _WINDOW_OPS or not _standard(r) \
                    or r.op_type == "Transpose" and list(_attrs(r).get("perm", [])) == [0, 3, 1, 2]:
                outside.append(value)
                continue
            if id(r) in seen:
                continue
            seen.add(id(r))
            region.append(r)
            if len(region) > MAX_WINDOW_NODES:
                return None
            inside.update(r.output)
            frontier.extend(r.output)
    outside = [v for v in outside if v != src]      # the view itself may be read elsewhere too (a residual)
    if len(set(outside)) != 1 or ctx.shapes.get(outside[0]) != full:
        return None
    return region, inside, outside[0]


def _window_sizes(ctx: _Graph, region: list[Any], c: int) -> tuple[int, int, int] | None:
    """(heads, N, window) from the region's one softmax over the last axis of windows x heads x N x N (N the
    square of the window; ``c`` channels a multiple of heads); None where there is no such softmax."""
    softmax = [r for r in region if r.op_type == "Softmax"]
    scores = ctx.shapes.get(softmax[0].output[0], ()) if len(softmax) == 1 else ()
    window = int(round(scores[-1] ** 0.5)) if len(scores) == 4 else 0
    if not window or window * window != scores[-1] or scores[-2] != scores[-1] \
            or _attrs(softmax[0]).get("axis", -1) not in (-1, 3) or c % scores[1]:
        return None
    return scores[1], scores[-1], window


def _position_bias(ctx: _Graph, region: list[Any], inside: set[str], sizes: tuple[int, int, int],
                   cosine: bool) -> tuple[list[Any], dict[str, tuple[str, Any]], list[Any]] | None:
    """What the region adds to the scores from outside it: the shift's mask (windows x 1 x N x N: at most
    one), and the position bias, a constant (Swin, MaxViT: read back as the table the relative position index
    maps) or, with ``cosine`` (V2), the position MLP's nodes (_cpb_branch); ``sizes``: window, heads and N.
    (the MLP's nodes, the parameters found, the masks); None where they are not so."""
    window, heads, n = sizes
    bias_nodes: list[Any] = []
    extra: dict[str, tuple[str, Any]] = {}
    table = None
    masks = []
    for r in region:
        for i in r.input if r.op_type == "Add" else []:
            if i in inside:
                continue
            v = ctx.consts.get(i)
            if v is not None and v.ndim == 4 and v.shape[1:] == (1, n, n):
                masks.append(v)
            elif v is not None and v.shape in ((heads, n, n), (1, heads, n, n)) and table is None and not cosine:
                table = _table_of(v.reshape(heads, n, n), window)
                if table is None:
                    return None
                extra["relative_position_bias_table"] = (i, table)
            elif v is None and cosine and not bias_nodes:
                found = _cpb_branch(ctx, i, window, heads)
                if found is None:
                    return None
                bias_nodes, extra = found
            elif v is None or v.ndim > 1:
                return None
    if (not bias_nodes if cosine else table is None) or len(masks) > 1:
        return None
    return bias_nodes, extra, masks


def _scaled_k(ctx: _Graph, region: list[Any], inside: set[str], sizes: tuple[int, int], cosine: bool,
              extra: dict[str, tuple[str, Any]]) -> bool | None:
    """Whether the one scalar scale multiplies k (MaxViT, by C^-0.5) rather than q (Swin, by (C / heads)^-0.5),
    read from the Gather that picks the scaled one of q, k, v; with ``cosine`` (V2), the heads x 1 x 1
    exp(logit_scale) (added to ``extra`` as logit_scale) and the two Clips of the normalisation, False;
    ``sizes``: C and heads. None where the scale is none of these."""
    import numpy as np

    c, heads = sizes
    scaled = [(r, i) for r in region if r.op_type == "Mul" for i in r.input if i in ctx.consts]
    scales = [(r, ctx.consts[i]) for r, i in scaled]
    if cosine:
        logit = [v for _, v in scales if v.shape == (heads, 1, 1)]
        clips = [r for r in region if r.op_type == "Clip"]
        if len(logit) != 1 or len(scales) != 1 or len(clips) != 2 or np.any(logit[0] <= 0) or any(
                _clip_floor(ctx, r) != 1e-12 for r in clips):
            return None
        extra["logit_scale"] = ("", np.log(logit[0]).astype(logit[0].dtype))
        return False
    if len(scales) != 1 or scales[0][1].size != 1:
        return None
    which = next((ctx.producer.get(i) for i in scales[0][0].input if i in inside), None)
    picked = ctx.consts.get(which.input[1]) if which is not None and which.op_type == "Gather" else None
    if picked is None or picked.size != 1 or int(picked) not in (0, 1):
        return None
    maxvit = int(picked) == 1
    expected = c ** -0.5 if maxvit else (c // heads) ** -0.5
    if abs(float(scales[0][1].reshape(-1)[0]) / expected - 1) > 1e-5:
        return None
    return maxvit


def _window_projections(ctx: _Graph, region: list[Any], c: int, maxvit: bool,
                        cosine: bool) -> dict[str, tuple[str, Any]] | None:
    """The qkv projection (C x 3C) and the output projection (C x C), each a MatMul by a constant and the Add
    of its bias, named as archc's WindowAttention names them (MaxViT's: to_qkv and merge); with ``cosine`` (V2)
    k's bias must be zero (archc's has none). None where they are not so."""
    import numpy as np

    names = {(c, 3 * c): "to_qkv" if maxvit else "qkv", (c, c): "merge" if maxvit else "proj"}
    params: dict[str, tuple[str, Any]] = {}
    for r in region:
        w = ctx.consts.get(r.input[1]) if r.op_type == "MatMul" and len(r.input) == 2 else None
        if w is None or w.ndim != 2:
            continue
        name = names.get(w.shape)
        add = _only_reader(ctx, r.output[0], "Add")
        bias = next(((i, ctx.consts[i]) for i in add.input if i in ctx.consts), None) if add is not None else None
        if name is None or name + ".weight" in params or bias is None or bias[1].shape != (w.shape[1],):
            return None
        params[name + ".weight"], params[name + ".bias"] = (r.input[1], w.T), bias
    if len(params) != 4 or cosine and np.any(params["qkv.bias"][1][c:2 * c] != 0):
        return None
    return params


def _emit_windows(ctx: _Graph, ends: tuple[str, str], found: dict[str, Any], extra: dict[str, tuple[str, Any]],
                  params: dict[str, tuple[str, Any]], maxvit: bool) -> None:
    """One ``window_attention`` layer of ``found``'s fields from the view to the value read outside (``ends``),
    channels-last; its parameters: the position bias's (``extra``), the relative position index archc builds
    (MaxViT's N x N; flat otherwise), then the projections (``params``)."""
    import numpy as np

    src, out = ends
    fields = FROM_ONNX["pattern:windows"].layer(Node(out, found, [], [], ()))
    index = _relative_index(found["window"])
    ctx.last.add(out)
    producer = ctx.producer[out]
    ctx.emit(producer, out, fields, [ctx.value_of[src]],
             {**extra, "relative_position_index": ("", (index if maxvit else index.reshape(-1)).astype(np.int64)),
              **params}, ctx.shape(src))


def _table_of(bias: Any, window: int) -> Any:
    """The relative position bias table ((2 window - 1)^2 x heads) that gives ``bias`` (heads x N x N) through
    the relative position index; None where no table does."""
    import numpy as np

    heads = bias.shape[0]
    index = _relative_index(window).reshape(-1)
    table = np.zeros(((2 * window - 1) ** 2, heads), dtype=bias.dtype)
    table[index] = bias.reshape(heads, -1).T
    return table if np.array_equal(table[index].T.reshape(bias.shape), bias) else None


def _coords_table(window: int) -> Any:
    """Swin V2's log-spaced relative coordinates, 1 x (2 window - 1) x (2 window - 1) x 2 (as archc's
    WindowAttention computes them, in float32)."""
    import numpy as np

    span = np.arange(-(window - 1), window, dtype=np.float32)
    table = np.stack(np.meshgrid(span, span, indexing="ij")).transpose(1, 2, 0)[None]
    table = table / np.float32(window - 1) * np.float32(8)
    return (np.sign(table) * np.log2(np.abs(table) + np.float32(1)) / np.float32(3)).astype(np.float32)


def _cpb_branch(ctx: _Graph, value: str, window: int, heads: int) -> tuple[list[Any], dict] | None:
    """Swin V2's position bias as the exporter writes it, from the scores' Add back: Mul by 16, Sigmoid,
    Reshape / Transpose, GatherND by the relative position index, Reshape, the MLP's second Linear
    (MatMul by 512 x heads), Relu, and the Add of its first Linear's bias to the first Linear applied to the
    coordinates table (folded into a constant: the weight is read back from it). The nodes and parameters."""
    import numpy as np

    nodes, v = [], value
    expect = ["Mul", "Sigmoid", "view", "GatherND", "view", "MatMul", "Relu", "Add"]
    found: dict[str, Any] = {}
    for kind in expect:
        r = ctx.producer.get(v)
        while kind == "view" and r is not None and r.op_type in ("Reshape", "Transpose"):
            nodes.append(r)
            v = r.input[0]
            r = ctx.producer.get(v)
        if kind == "view":
            continue
        if r is None or r.op_type != kind or len(ctx.readers.get(v, [])) != 1 and v != value:
            return None
        nodes.append(r)
        found[kind] = r
        tensors = [i for i in r.input if i and i not in ctx.consts]
        if kind != "Add" and len(tensors) != 1:
            return None
        v = tensors[0] if tensors else ""
    mul, gather, second, first = found["Mul"], found["GatherND"], found["MatMul"], found["Add"]
    sixteen = [ctx.consts[i] for i in mul.input if i in ctx.consts]
    index = ctx.consts.get(gather.input[1])
    w2 = ctx.consts.get(second.input[1])
    consts = sorted((ctx.consts[i] for i in first.input if i in ctx.consts), key=lambda a: a.ndim)
    span = 2 * window - 1
    if len(sixteen) != 1 or sixteen[0].size != 1 or float(sixteen[0]) != 16 or index is None \
            or not np.array_equal(index.reshape(-1), _relative_index(window).reshape(-1)) or w2 is None \
            or w2.shape != (512, heads) or len(consts) != 2 or consts[0].shape != (512,) \
            or consts[1].shape != (1, span, span, 512) or len(first.input) != 2:
        return None
    coords = _coords_table(window)
    solved, *_ = np.linalg.lstsq(coords.reshape(-1, 2).astype(np.float64), consts[1].reshape(-1, 512).astype(np.float64),
                                 rcond=None)
    w1 = solved.T.astype(np.float32)              # 512 x 2
    again = coords.reshape(-1, 2) @ w1.T
    if np.max(np.abs(again - consts[1].reshape(-1, 512))) > 1e-5 * max(1.0, float(np.max(np.abs(consts[1])))):
        return None
    bias_name = next(i for i in first.input if i in ctx.consts and ctx.consts[i].ndim == 1)
    folded = next(i for i in first.input if i in ctx.consts and ctx.consts[i].ndim == 4)
    return nodes, {"relative_coords_table": ("", coords), "cpb_mlp.0.weight": (folded, w1),
                   "cpb_mlp.0.bias": (bias_name, consts[0]), "cpb_mlp.2.weight": (second.input[1], w2.T)}


def _clip_floor(ctx: _Graph, node: Any) -> float | None:
    lo = ctx.consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    hi = node.input[2] if len(node.input) > 2 else ""
    return _f32(lo.reshape(-1)[0]) if lo is not None and lo.size == 1 and not hi else None


def _partition(ctx: _Graph, region: list[Any], window: int, ph: int, pw: int) -> bool | None:
    """Whether the region cuts the map into MaxViT's grid (True) or into windows (False), from its 6-d
    Transposes (the partition and its reverse); None where they are neither."""
    found = sorted((tuple(ctx.shapes.get(r.input[0], ())), tuple(_attrs(r).get("perm", []))) for r in region
                   if r.op_type == "Transpose" and len(ctx.shapes.get(r.input[0], ())) == 6)
    if len(found) != 2:
        return None
    gh, gw, c = ph // window, pw // window, found[0][0][-1]
    windows = sorted([((1, gh, window, gw, window, c), (0, 1, 3, 2, 4, 5)), ((1, gh, gw, window, window, c), (0, 1, 3, 2, 4, 5))])
    grid = sorted([((1, window, gh, window, gw, c), (0, 2, 4, 1, 3, 5)), ((1, gh, gw, window, window, c), (0, 3, 1, 4, 2, 5))])
    if sorted(found) == windows:
        return False
    if sorted(found) == grid:
        return True
    return None


def _shift(ctx: _Graph, region: list[Any], window: int, ph: int, pw: int, masks: list) -> int | None:
    """The shift of shifted windows: the rolls (Concat of two Slices) before the windows and back after them,
    and the mask archc builds for it; 0 without rolls and mask; None where they disagree."""
    import numpy as np

    position = {id(x): k for k, x in enumerate(ctx.order)}
    rolls = sorted((position[id(r)], _roll(ctx, r)) for r in region if r.op_type == "Concat")
    if any(roll is None for _, roll in rolls):
        return None
    if not rolls:
        return None if masks else 0
    forward = [roll for _, roll in rolls[:len(rolls) // 2]]
    back = [roll for _, roll in rolls[len(rolls) // 2:]]
    sizes = {1: ph, 2: pw}
    shifts = {axis: a for axis, a in forward}
    if len(rolls) % 2 or len(shifts) != len(forward) or len(set(shifts.values())) != 1 \
            or sorted((axis, sizes[axis] - a) for axis, a in back) != sorted(shifts.items()):
        return None
    shift = next(iter(shifts.values()))
    per_axis = tuple(shifts.get(axis, 0) for axis in (1, 2))
    if per_axis != tuple(0 if window >= size else shift for size in (ph, pw)) or len(masks) != 1 \
            or not np.array_equal(masks[0], _shift_mask(ph, pw, window, per_axis)):
        return None
    return shift


def _roll(ctx: _Graph, node: Any) -> tuple[int, int] | None:
    """(axis, a) of a Concat that is x[a:] then x[:a] along one axis (torch.roll as the exporter writes it)."""
    cuts = [_slice(ctx, ctx.producer.get(i)) if ctx.producer.get(i) is not None else None for i in node.input]
    sources = {ctx.producer[i].input[0] for i in node.input if i in ctx.producer}
    if len(cuts) != 2 or None in cuts or len(sources) != 1:
        return None
    (axis, a0, e0, s0), (axis1, a1, e1, s1) = cuts
    size = ctx.shapes.get(next(iter(sources)), ())[axis]
    if axis != axis1 or (s0, s1) != (1, 1) or (a0, e0, a1, e1) != (a0, size, 0, a0) or not 0 < a0 < size \
            or _attrs(node).get("axis") % 4 != axis:
        return None
    return axis, a0
