"""Patterns of the ops archc gained for timm's models, read back from what the exporters write: views of a
map (its positions as tokens: ``to_tokens``, and ``transpose`` where the exporter cancelled a transpose after
it; K branches held along its channels: ``branch_sum``, ``branch_softmax``, a Reshape to N x K x C x H x W or
N x G x K x C x H x W, then a sum or softmax over the branches' axis) and ConvNeXt V2's global response norm
(``grn``). Each checks the sizes, axes and constants that decide what is computed and gives the node to the
next step where one does not hold."""

from __future__ import annotations

from typing import Any

from ...ops import FROM_ONNX
from .fold import _attrs
from .graph import Node, _Graph, _only_reader, _other, _scalar, _unique
from .steps import _reduced_axes


def _tokens_step(node: Any, ctx: _Graph) -> bool:
    """A Reshape of an image (N x C x H x W) to N x C x (H W): the map's positions. With a Transpose 0 2 1
    alone reading it, a sequence of H W tokens of C features (``to_tokens``: ``x.flatten(2).transpose(1, 2)``);
    without one, C tokens of H W features (``to_tokens`` then ``transpose``: what is left where the exporter
    cancelled a transpose after to_tokens)."""
    if node.op_type != "Reshape" or not node.input or node.input[0] not in ctx.value_of or node.input[0] in ctx.last:
        return False
    src, out = node.input[0], node.output[0]
    c = ctx.shape(src)
    if len(c) != 3 or min(c) < 1 or ctx.shapes.get(out, ())[1:] != (c[0], c[1] * c[2]):
        return False
    tokens = FROM_ONNX["pattern:tokens"].layer(Node(node.name, {}, [None], [c], (c[1] * c[2], c[0])))
    turn = _only_reader(ctx, out, "Transpose")
    if turn is not None and [int(p) for p in _attrs(turn).get("perm", [])] == [0, 2, 1]:
        ctx.skip.add(id(turn))
        ctx.emit(turn, turn.output[0], tokens, [ctx.value_of[src]], {}, c)
        return True
    seq = _unique(out + "/tokens", set(ctx.shapes))
    ctx.shapes[seq] = (ctx.shapes[out][0], c[1] * c[2], c[0])
    ctx.emit(node, seq, tokens, [ctx.value_of[src]], {}, c)
    swap = FROM_ONNX["Transpose"].layer(Node(node.name, {"perm": [0, 2, 1]}, [None], [(c[1] * c[2], c[0])],
                                             (c[0], c[1] * c[2])))
    ctx.emit(node, out, swap, [ctx.value_of[seq]], {}, (c[1] * c[2], c[0]))
    return True


def _branches_step(node: Any, ctx: _Graph) -> bool:
    """K branches held along an image's channels: its Reshape to N x K x C/K x H x W (which the channel
    shuffle's step holds as ``grouped``) read by ReduceSum over axis 1 without keeping it (``branch_sum``), or
    by Softmax over axis 1 (opset 13 on: over that axis alone) and a Reshape back to the image
    (``branch_softmax``); ResNeSt's N x G x K x C/(G K) x H x W, Transpose 0 2 1 3 4 5, Softmax over axis 1,
    Reshape back (``branch_softmax`` with ``groups`` G). True when the node is taken (a step held in
    ``ctx.pending`` until the pattern completes)."""
    if not node.input or not node.output:
        return False
    src, out, kind = node.input[0], node.output[0], node.op_type
    state = ctx.pending.get(src)
    full = ctx.shapes.get(out, ())
    if kind == "Reshape" and state is None and src in ctx.value_of and src not in ctx.last:
        c = ctx.shape(src)
        turn = _only_reader(ctx, out, "Transpose")
        swap = [0, 2, 1, *range(3, len(full))]
        # (N x G x K x C/(G K) x H x W, or its last three axes as one: timm's RadixSoftmax views it N x G x K x -1)
        if len(c) == 3 and (len(full) == 6 and full[1] * full[2] * full[3] == c[0] and full[4:] == c[1:]
                            or len(full) == 4 and c[0] % (full[1] * full[2]) == 0
                            and full[1] * full[2] * full[3] == c[0] * c[1] * c[2]) \
                and turn is not None and [int(p) for p in _attrs(turn).get("perm", [])] == swap:
            ctx.pending[out] = ("radix", ctx.value_of[src], int(full[1]), int(full[2]), c)
            return True
        return False
    if state is None:
        return _product_step(node, ctx)
    if kind == "Transpose" and state[0] == "radix" and [int(p) for p in _attrs(node).get("perm", [])] == \
            [0, 2, 1, *range(3, len(full))]:
        ctx.pending[out] = ("radix_t", *state[1:])
        return True
    held = ctx.shapes.get(src, ())
    if state[0] == "grouped" and len(held) == 5:           # (the image: N x K x C x H x W is K C x H x W)
        state = (*state, (held[1] * held[2], *held[3:]))
    if kind == "ReduceSum" and state[0] == "grouped" and _reduced_axes(ctx, node) == [1] \
            and not _attrs(node).get("keepdims", 1):
        fields = FROM_ONNX["pattern:branch_sum"].layer(Node(node.name, {"branches": state[2]}, [], [], ()))
        ctx.emit(node, out, fields, [state[1]], {}, state[3])
        return True
    if kind == "Softmax" and state[0] in ("grouped", "radix_t") and _attrs(node).get("axis") in (1, -len(full) + 1) \
            and ctx.opset >= 13:
        groups, branches = (1, state[2]) if state[0] == "grouped" else state[2:4]
        ctx.pending[out] = ("softmax", state[1], branches, groups, state[-1])
        return True
    image = state[-1]
    regrouped = len(full) == 5 and full[1] * full[2] == image[0] and full[3:] == image[1:]
    if kind == "Reshape" and state[0] == "softmax" and (full[1:] == image or regrouped):
        fields = FROM_ONNX["pattern:branch_softmax"].layer(Node(node.name, {"branches": state[2], "groups": state[3]},
                                                                [], [], ()))
        if not regrouped:
            ctx.emit(node, out, fields, [state[1]], {}, image)
            return True
        # (the exporter's optimizer merged the Reshape back to the map with the next one's into branches)
        weights = _unique(out + "/weights", set(ctx.shapes))
        ctx.shapes[weights] = (full[0], *image)
        ctx.emit(node, weights, fields, [state[1]], {}, image)
        ctx.pending[out] = ("grouped", ctx.value_of[weights], int(full[1]))
        return True
    return _product_step(node, ctx)


def _product_step(node: Any, ctx: _Graph) -> bool:
    """The product of two maps' branches (each held as N x K x C x H x W: the branches and their weights,
    ResNeSt's split attention, SKNet's selective kernel): a ``mul`` of the two maps (the weights' H x W of 1
    x 1 broadcast), itself held as K branches for the ``branch_sum`` after it."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return False
    states = [_grouped(ctx, node, v) for v in node.input]
    full = [ctx.shapes.get(v, ()) for v in node.input]
    if any(s is None or s[0] != "grouped" or len(f) != 5 for s, f in zip(states, full, strict=True)) \
            or full[0][1:3] != full[1][1:3] or ctx.shapes.get(node.output[0], ())[1:] != tuple(
                max(a, b) for a, b in zip(full[0][1:], full[1][1:], strict=True)):
        return False
    images = [(f[1] * f[2], *f[3:]) for f in full]
    out = ctx.shapes[node.output[0]]
    image = (out[1] * out[2], *out[3:])
    fields = FROM_ONNX["Mul"].layer(Node(node.name, {}, [None, None], images, image))
    product = _unique(node.output[0] + "/branches", set(ctx.shapes))
    ctx.shapes[product] = (out[0], *image)
    ctx.emit(node, product, fields, [s[1] for s in states], {}, images[0])
    ctx.pending[node.output[0]] = ("grouped", ctx.value_of[product], int(out[1]))
    return True


def _grn_step(node: Any, ctx: _Graph) -> bool:
    """ConvNeXt V2's global response norm as the exporters write it (timm's GlobalResponseNorm and archc's):
    ReduceL2 of the map over H and W (kept), ReduceMean of that over the channels (kept), + eps, the norms
    divided by it, the map times that, times a C weight and plus a C bias (each 1 x C x 1 x 1 or C x 1 x 1:
    addcmul), plus the map: one ``grn`` with that weight and bias."""
    import numpy as np

    if node.op_type != "ReduceL2" or not node.input or node.input[0] not in ctx.value_of or node.input[0] in ctx.last:
        return False
    x, gx = node.input[0], node.output[0]
    c = ctx.shape(x)
    if len(c) != 3 or _reduced_axes(ctx, node) != [2, 3] or not _attrs(node).get("keepdims", 1):
        return False
    readers = ctx.readers.get(gx, [])
    mean = next((r for r in readers if r.op_type == "ReduceMean"), None)
    div = next((r for r in readers if r.op_type == "Div"), None)
    if len(readers) != 2 or mean is None or div is None or _reduced_axes(ctx, mean) != [1] \
            or not _attrs(mean).get("keepdims", 1):
        return False
    plus = _only_reader(ctx, mean.output[0], "Add")
    eps = _scalar(ctx, _other(plus, mean.output[0]) or "") if plus is not None else None
    if eps is None or eps <= 0 or list(div.input) != [gx, plus.output[0]] or _only_reader(ctx, plus.output[0], "Div") \
            is not div:
        return False
    times = _only_reader(ctx, div.output[0], "Mul")
    scale = _only_reader(ctx, times.output[0], "Mul") if times is not None and _other(times, div.output[0]) == x \
        else None
    shift = _only_reader(ctx, scale.output[0], "Add") if scale is not None else None
    total = _only_reader(ctx, shift.output[0], "Add") if shift is not None else None
    if total is None or _other(total, shift.output[0]) != x:
        return False
    w_name, b_name = _other(scale, times.output[0]), _other(shift, scale.output[0])
    w, b = ctx.consts.get(w_name or ""), ctx.consts.get(b_name or "")
    if any(v is None or v.dtype.kind != "f" or v.shape not in ((1, c[0], 1, 1), (c[0], 1, 1)) for v in (w, b)):
        return False
    fields = FROM_ONNX["pattern:grn"].layer(Node(node.name, {"epsilon": eps}, [], [c], c))
    ctx.skip.update(id(n) for n in (mean, plus, div, times, scale, shift, total))
    ctx.emit(total, total.output[0], fields, [ctx.value_of[x]],
             {"weight": (w_name, np.asarray(w, np.float32).reshape(c[0])),
              "bias": (b_name, np.asarray(b, np.float32).reshape(c[0]))}, c)
    return True


def _grouped(ctx: _Graph, node: Any, value: str) -> tuple | None:
    """The pending state of ``value`` as K branches of a map (``grouped``); a softmax over the branches not
    reshaped back (SKNet multiplies N x K x C x 1 x 1 weights by its stacked paths) becomes its
    ``branch_softmax`` layer here. None where ``value`` is no such state."""
    state = ctx.pending.get(value)
    if state is None or state[0] != "softmax" or state[3] != 1 or len(ctx.shapes.get(value, ())) != 5:
        return state
    fields = FROM_ONNX["pattern:branch_softmax"].layer(Node(node.name, {"branches": state[2], "groups": 1}, [], [], ()))
    weights = _unique(value + "/weights", set(ctx.shapes))
    ctx.shapes[weights] = (ctx.shapes[value][0], *state[4])
    ctx.emit(node, weights, fields, [state[1]], {}, state[4])
    ctx.pending[value] = ("grouped", ctx.value_of[weights], state[2])
    return ctx.pending[value]


def _stack_step(node: Any, ctx: _Graph) -> bool:
    """Maps stacked along a new axis 1 (``torch.stack(paths, 1)``: an Unsqueeze of each, axes [1], and a Concat
    along axis 1, SKNet's selective kernel): a ``concat`` of the maps along their channels, held as K branches
    for the ``branch_sum`` and ``mul`` after it."""
    if node.op_type == "Unsqueeze" and node.input and node.input[0] in ctx.value_of and node.input[0] not in ctx.last:
        c = ctx.shape(node.input[0])
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in ctx.consts:
            axes = [int(v) for v in ctx.consts[node.input[1]].reshape(-1)]
        joined = _only_reader(ctx, node.output[0], "Concat")
        if len(c) == 3 and axes is not None and [int(v) for v in axes] in ([1], [-4]) and joined is not None \
                and _attrs(joined).get("axis") in (1, -4):
            ctx.pending[node.output[0]] = ("stacked", ctx.value_of[node.input[0]], c)
            return True
        return False
    states = [ctx.pending.get(v) for v in node.input]
    if node.op_type != "Concat" or len(states) < 2 or any(s is None or s[0] != "stacked" for s in states) \
            or len({s[2] for s in states}) != 1:
        return False
    c = states[0][2]
    image = (len(states) * c[0], *c[1:])
    fields = FROM_ONNX["Concat"].layer(Node(node.name, {"axis": 1}, [None] * len(states), [c] * len(states), image))
    joined = _unique(node.output[0] + "/channels", set(ctx.shapes))
    ctx.shapes[joined] = (ctx.shapes.get(node.output[0], (1,))[0], *image)
    ctx.emit(node, joined, fields, [s[1] for s in states], {}, c)
    ctx.pending[node.output[0]] = ("grouped", ctx.value_of[joined], len(states))
    return True
