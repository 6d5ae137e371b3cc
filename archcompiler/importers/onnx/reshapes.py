"""The patterns that only move values, read back as one archc op: the channel shuffle (Reshape, Transpose,
Reshape), Swin's patch merging (strided slices and a Concat, or the Reshape and Transpose chain the newer
exporters write), and the grouped layouts of a Reshape chain, each checked on the positions it moves."""

from __future__ import annotations

from typing import Any

from ...ops import FROM_ONNX, Unmappable
from .fold import MAX_CHAIN_ELEMENTS, _attrs, _size
from .graph import Node, _const_of, _f32, _Graph, _only_reader, _slice, _standard


def _shuffle_step(node: Any, ctx: _Graph) -> Any:
    """ShuffleNet's channel shuffle as exporters write it (Reshape into N x g x C/g x H x W, Transpose
    perm 0 2 1 3 4, Reshape back) and its split (Split along the channels into two halves): True when
    the node is a step (its state in ``pending``), the finished layers [(output, fields, input)] when
    the pattern is complete, None when it is no such step."""
    consts, shapes, value_of, pending = ctx.consts, ctx.shapes, ctx.value_of, ctx.pending
    attrs = _attrs(node)
    src = node.input[0] if node.input else None
    if src in ctx.last:
        return None
    out_shape = shapes.get(node.output[0], ())[1:] if node.output else ()
    state = pending.get(src)
    if node.op_type == "Reshape" and state is None and src in value_of:
        c = shapes.get(src, ())[1:]
        if len(out_shape) == 4 and len(c) == 3 and out_shape[0] * out_shape[1] == c[0] and out_shape[2:] == c[1:]:
            pending[node.output[0]] = ("grouped", value_of[src], int(out_shape[0]))
            return True
    if node.op_type == "Transpose" and state is not None and state[0] == "grouped" \
            and list(attrs.get("perm", [])) == [0, 2, 1, 3, 4]:
        pending[node.output[0]] = ("swapped", state[1], state[2])
        return True
    if node.op_type == "Reshape" and state is not None and state[0] == "swapped" and len(out_shape) == 3:
        return [(node.output[0], FROM_ONNX["pattern:shuffle"].layer(Node(node.name, {"groups": state[2]}, [], [], ())),
                 state[1])]
    if node.op_type == "Split" and src in value_of and attrs.get("axis") == 1 and len(node.output) == 2:
        halves = [shapes.get(o, ())[1:2] for o in node.output]
        sizes = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        equal = halves[0] == halves[1] and (sizes is None or len(set(int(v) for v in sizes)) == 1)
        if equal:
            split = FROM_ONNX["pattern:split"]
            return [(o, split.layer(Node(node.name, {"half": h}, [], [], ())), value_of[src]) for h, o in enumerate(node.output)]
    return None


def _identity_chain(node: Any, ctx: _Graph) -> bool:
    """Reshapes and Transposes, each the only reader of the one before, that give the tensor back as it was
    (every element where it started: the exporter writes an in-place op on a view as the views undone,
    then done again): the tensor itself. Checked on the positions 0, 1, ... of a tensor of its shape."""
    import numpy as np

    src = node.input[0]
    full = ctx.shapes.get(src, ())
    if not full or min(full) < 1 or _size(full) > MAX_CHAIN_ELEMENTS:
        return False
    x = start = np.arange(_size(full)).reshape(full)
    chain, step = [], node
    while step is not None and len(chain) < 16:
        if step.op_type == "Transpose":
            perm = list(_attrs(step).get("perm", reversed(range(x.ndim))))
            if sorted(perm) != list(range(x.ndim)):
                return False
            x = x.transpose(perm)
        else:
            target = ctx.shapes.get(step.output[0], ())
            if len(step.input) < 2 or step.input[1] not in ctx.consts or not target or min(target) < 1 \
                    or _size(target) != x.size:
                return False
            x = x.reshape(target)
        chain.append(step)
        if x.shape == start.shape and np.array_equal(x, start):
            for c in chain:
                ctx.skip.add(id(c))
                ctx.alias(c.output[0], src)
            ctx.skip.discard(id(node))
            return True
        readers = ctx.readers.get(step.output[0], [])
        step = readers[0] if len(readers) == 1 and readers[0].op_type in ("Reshape", "Transpose") \
            and readers[0].input[0] == step.output[0] else None
    return False


def _merge_step(node: Any, ctx: _Graph) -> bool:
    """Swin's patch merging on a channels-last view, as the exporter writes it: a Pad of the bottom and right
    by H % 2 and W % 2 (zeros), the four Slices x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
    x[:, 1::2, 1::2] concatenated along the channels, then LayerNormalization and a MatMul without bias (V2:
    the MatMul, then the LayerNormalization): one ``patch_merging`` layer, its output channels-last."""
    if node.op_type != "Pad" or not node.input or node.input[0] not in ctx.last:
        return False
    src, top = node.input[0], node.output[0]
    full = ctx.shapes.get(src, ())
    pads = ctx.consts.get(node.input[1]) if len(node.input) > 1 else None
    value = ctx.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(full) != 4 or pads is None or list(pads.reshape(-1)) != [0, 0, 0, 0, 0, full[1] % 2, full[2] % 2, 0] \
            or _attrs(node).get("mode", b"constant") not in (b"constant", "constant") \
            or (value is not None and float(value.reshape(-1)[0]) != 0) or len(node.input) > 3:
        return False
    taken = [node]
    cat = None
    offsets = []
    for r in ctx.readers.get(top, []):
        first = _slice(ctx, r)
        after = ctx.readers.get(r.output[0], [])
        if first is None or first[0] != 1 or first[3] != 2:
            return False
        for second in after:
            cut = _slice(ctx, second)
            join = _only_reader(ctx, second.output[0], "Concat")
            if cut is None or cut[0] != 2 or cut[3] != 2 or join is None or (cat is not None and join is not cat):
                return False
            cat = join
            offsets.append((list(cat.input).index(second.output[0]), first[1], cut[1]))
            taken.append(second)
        taken.append(r)
    if cat is None or sorted(offsets) != [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)] or len(cat.input) != 4 \
            or _attrs(cat).get("axis") not in (-1, 3):
        return False
    chain, value_name = [], cat.output[0]
    for _ in range(2):
        nxt = [r for r in ctx.readers.get(value_name, [])]
        if len(nxt) != 1 or nxt[0].op_type not in ("LayerNormalization", "MatMul") or any(c.op_type == nxt[0].op_type
                                                                                          for c in chain):
            return False
        chain.append(nxt[0])
        value_name = nxt[0].output[0]
    norm, product = (chain[0], chain[1]) if chain[0].op_type == "LayerNormalization" else (chain[1], chain[0])
    w = ctx.consts.get(product.input[1]) if product.input[0] in (cat.output[0], norm.output[0]) else None
    gamma, beta = (ctx.consts.get(i) for i in (list(norm.input) + ["", ""])[1:3])
    after = chain[0] is product
    channels = 4 * full[3]
    if w is None or w.ndim != 2 or w.shape[0] != channels or gamma is None or beta is None \
            or gamma.shape != ((w.shape[1],) if after else (channels,)) or beta.shape != gamma.shape \
            or _attrs(norm).get("axis", -1) not in (-1, 3):
        return False
    ctx.skip.update(id(t) for t in [*taken, cat, *chain])
    merge = {"out": int(w.shape[1]), "eps": _f32(_attrs(norm).get("epsilon", 1e-5)), **({"norm": "after"} if after else {})}
    fields = FROM_ONNX["pattern:merge"].layer(Node(chain[0].name, merge, [], [], ()))
    out = chain[1].output[0]
    ctx.last.add(out)
    ctx.emit(chain[1], out, fields, [ctx.value_of[src]],
             {"norm.weight": (norm.input[1], gamma), "norm.bias": (norm.input[2], beta),
              "reduction.weight": (product.input[1], w.T)}, ctx.shape(src))
    return True


def _groups_step(node: Any, ctx: _Graph) -> bool:
    """A norm over groups of channels as the exporters write torch's nn.GroupNorm before opset 21: a Reshape
    of an image to N x G x (C / G * H * W), InstanceNormalization (scale 1, bias 0), a Reshape back (to a
    constant shape, or to the Shape of the image: the TorchScript exporter's), a Mul by a C x 1 x 1 scale
    and an Add of a C x 1 x 1 shift, each the only reader of the one before: one layer of
    ``FROM_ONNX["pattern:instance_norm_groups"]``, the scale and shift its weight and bias. The nodes are
    taken at the first Reshape (or at the Shape, where that comes first) and the layer is made at the Add,
    once the Constant nodes the TorchScript exporter writes between them have been read; archc reads no
    InstanceNormalization otherwise, so constants that do not fit are refused there, saying which."""
    state = ctx.pending.get(node.output[0]) if node.op_type == "Add" and node.output else None
    if state is not None and state[0] == "instance_norm_groups":
        del ctx.pending[node.output[0]]
        _groups_layer(node, ctx, state)
        return True
    return _groups_taken(node, ctx)


def _groups_layer(node: Any, ctx: _Graph, state: tuple) -> None:
    """The group norm's layer at its Add (``node``), from the nodes _groups_taken took (``state``: the image,
    the InstanceNormalization, the Reshape back, the Mul, the groups), their constants checked now that the
    Constant nodes are read: Unmappable, saying which, where they do not fit."""
    from types import SimpleNamespace

    import numpy as np

    _, src, norm, back, mul, groups = state
    full, consts = ctx.shapes[src], ctx.consts
    c = full[1]

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise Unmappable(f"a norm over {groups} groups of channels (Reshape, InstanceNormalization, Reshape, "
                             f"Mul, Add) whose {why}")
    scale, shift = consts.get(norm.input[1]), consts.get(norm.input[2])
    need(scale is not None and shift is not None and scale.shape == (groups,) == shift.shape
         and bool(np.all(scale == 1)) and bool(np.all(shift == 0)),
         f"InstanceNormalization's scale and bias are not {groups} ones and zeros")
    target = consts.get(back.input[1])
    if target is not None:          # a constant shape: N x C x H x W (0: as the input's, -1: the rest)
        t = [full[k] if v == 0 else v for k, v in enumerate(int(v) for v in target.reshape(-1))]
        need(t in ([*full], [-1, *full[1:]]), f"Reshape back gives {t}, not the input's {list(full)}")
    params = {}
    for step, suffix in ((mul, "weight"), (node, "bias")):
        _, pairs = _const_of(ctx, step)
        need(len(pairs) == 1 and tuple(pairs[0][1].shape) in ((c, 1, 1), (1, c, 1, 1)),
             f"{step.op_type} is not by a constant of {c} x 1 x 1")
        params[suffix] = (step.input[pairs[0][0]], pairs[0][1].reshape(c))
    fields = FROM_ONNX["pattern:instance_norm_groups"].layer(
        Node(norm.name, {**_attrs(norm), "groups": groups}, [], [], ()))
    if min(ctx.shapes.get(node.output[0]) or (-1,)) < 1:     # after a Reshape to a Shape: left unknown
        ctx.shapes[node.output[0]] = full
    ctx.emit(SimpleNamespace(name=norm.name, op_type="GroupNormalization"), node.output[0], fields,
             [ctx.value_of[src]], params, full[1:])


def _groups_taken(node: Any, ctx: _Graph) -> bool:
    """At the first Reshape of the image (or the Shape of it the TorchScript exporter reads first): where the
    nodes of _groups_step's pattern follow, each the only reader of the one before, they are taken (skipped by
    the walk) and the Add is marked in ``pending`` for _groups_layer; False where they do not follow."""
    if node.op_type not in ("Reshape", "Shape") or not node.input or node.input[0] not in ctx.value_of \
            or node.input[0] in ctx.last:
        return False
    src = node.input[0]
    full = ctx.shapes.get(src, ())
    if len(full) != 4 or min(full) < 1:
        return False

    def constant(value: str) -> bool:
        """A constant now, or a Constant node's value once it is read."""
        made = ctx.producer.get(value)
        return value in ctx.consts or made is not None and made.op_type == "Constant" and _standard(made)
    firsts = [node] if node.op_type == "Reshape" else \
        [r for r in ctx.readers.get(src, []) if r.op_type == "Reshape" and _standard(r) and r.input[0] == src]
    for first in firsts:
        grouped = ctx.shapes.get(first.output[0], ())
        if len(first.input) != 2 or not constant(first.input[1]) or len(grouped) != 3 or min(grouped) < 1 \
                or grouped[0] != full[0] or grouped[1] * grouped[2] != _size(full[1:]) or full[1] % grouped[1]:
            continue
        norm = _only_reader(ctx, first.output[0], "InstanceNormalization")
        back = _only_reader(ctx, norm.output[0], "Reshape") if norm is not None else None
        mul = _only_reader(ctx, back.output[0], "Mul") if back is not None else None
        add = _only_reader(ctx, mul.output[0], "Add") if mul is not None else None
        if add is None or len(norm.input) != 3 or norm.input[0] != first.output[0] or len(back.input) != 2 \
                or back.input[0] != norm.output[0] or _attrs(back).get("allowzero") \
                or [i for i in mul.input if i and not constant(i)] != [back.output[0]] \
                or [i for i in add.input if i and not constant(i)] != [mul.output[0]]:
            continue
        size = ctx.producer.get(back.input[1])     # the TorchScript exporter's: a Reshape to Shape(input)
        if size is not None and size.op_type == "Shape":
            if not _standard(size) or list(size.input) != [src] or _attrs(size) \
                    or len(ctx.readers.get(back.input[1], [])) != 1:
                continue
        elif constant(back.input[1]):
            size = None
        else:
            continue
        if node.op_type == "Shape" and size is not node:
            continue
        for taken in (first, norm, back, size, mul):
            if taken is not None and taken is not node:
                ctx.skip.add(id(taken))
        ctx.pending[add.output[0]] = ("instance_norm_groups", src, norm, back, mul, grouped[1])
        return True
    return False
