"""Pattern steps: what an exporter writes for one archc op as many nodes, read back as that op (channels-last
views, a MatMul and its bias Add, learned parameters and constants, views, LRN, the exact GELU and LayerNorm of the older opsets, a mean over H and W,
a Pad) and the one-node mappings of ``FROM_ONNX``. Each checks the constants that decide what is computed and
gives the node to the next step where one does not hold."""

from __future__ import annotations

from typing import Any

from ...ops import FROM_ONNX, Unmappable, layer_or_general
from ...spec.limits import MAX_DIM
from ..text import model as layer_model
from .fold import MAX_CHAIN_ELEMENTS, _attrs, _size
from .graph import (
    _ANY_LAYOUT,
    Node,
    _const_of,
    _f32,
    _Graph,
    _only_reader,
    _other,
    _q,
    _refuse,
    _scalar,
    _sole_reader,
    _standard,
    _unique,
)
from .reshapes import _identity_chain


def _mapped(node: Any, ctx: _Graph) -> None:
    """A node of FROM_ONNX: one layer (its initializers its weights), or refused."""
    entry = FROM_ONNX.get(node.op_type) if ":" not in node.op_type else None
    if entry is None or not _standard(node):
        raise _refuse(node, "has no archc op")
    consts = ctx.consts
    tensor_ins = [i for i in node.input if i and i not in consts]
    if not tensor_ins:
        raise _refuse(node, "reads no layer's output (its inputs are constants or none)",
                      "each archc layer reads the output of the input or of another layer")
    for i in tensor_ins:
        if i not in ctx.value_of:
            raise _refuse(node, f"reads {i!r}, which is not a layer's output")
    last = [i in ctx.last for i in tensor_ins]
    if any(last) and (not all(last) or node.op_type not in _ANY_LAYOUT):
        raise _refuse(node, "reads a channels-last view (after Transpose 0 2 3 1) that archc has no op for",
                      f"archc reads {', '.join(sorted(_ANY_LAYOUT))} on a channels-last view")
    attrs = _attrs(node)
    n = Node(node.name, attrs, [consts.get(i) if i else None for i in node.input],
             [ctx.shape(i) for i in tensor_ins], ctx.shapes.get(node.output[0], ())[1:], any(last), ctx.opset)
    if any(last):
        s = n.shape
        n.shape = (s[2], s[0], s[1]) if len(s) == 3 else s
    try:
        entry, fields = layer_or_general(FROM_ONNX, entry, node.op_type, n)
    except Unmappable as exc:
        raise _refuse(node, str(exc), f"archc reads {node.op_type} only where the reason above does not hold") \
            from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        raise _refuse(node, f"unexpected attributes or inputs ({type(exc).__name__})") from None
    params = {}
    for pos, suffix in entry.weights.items():
        if pos < len(node.input) and node.input[pos]:
            if node.input[pos] not in consts:
                raise _refuse(node, f"its {suffix} {_q(node.input[pos])} is computed by the graph, not an initializer",
                              "archc reads a layer's parameters from the file's initializers")
            arr = consts[node.input[pos]]
            if suffix == "weight" and (node.op_type == "Gemm" and not attrs.get("transB", 0) or node.op_type == "MatMul"):
                arr = arr.T
            params[suffix] = (node.input[pos], arr)
    item = ctx.emit(node, node.output[0], fields, [ctx.value_of[i] for i in tensor_ins], params,
                    n.shapes[0] if n.shapes else (), any(last))
    if node.op_type == "BatchNormalization":
        import numpy as np
        ctx.weights[f"{item.name}.num_batches_tracked"] = np.zeros((), dtype=np.int64)


def _lrn_step(node: Any, consts: dict, value_of: dict, pending: dict) -> Any:
    """PyTorch's local_response_norm as its ONNX export writes it (the function's own steps, not the LRN
    operator): x * x, Reshape to N x 1 x C x H x W, Pad along the channels, AveragePool (size, 1, 1),
    Squeeze, Mul(alpha), Add(k), Pow(beta), then x / that. True when the node is a step (its state in
    ``pending``), [(output, fields, input)] at the division, None when it is no such step."""
    import onnx

    ins = [i for i in node.input if i]
    kind = node.op_type

    def number(name: str) -> float | None:
        v = consts.get(name)
        return _f32(v.reshape(-1)[0]) if v is not None and getattr(v, "size", 0) == 1 else None
    if kind == "Mul" and len(ins) == 2 and ins[0] == ins[1] and ins[0] in value_of:
        pending[node.output[0]] = ("lrn", ins[0], "square")
        return True
    at = next((i for i in ins if pending.get(i, ("",))[0] == "lrn"), None)
    if at is None:
        return None
    state, other = pending[at], [i for i in ins if i != at]
    stage = state[2]
    if kind == "Div" and stage == "pow" and len(ins) == 2 and ins == [state[1], at]:
        size, alpha, k, beta = state[3:]
        fields = FROM_ONNX["pattern:lrn"].layer(Node(node.name, {"size": size, "alpha": alpha, "beta": beta, "k": k},
                                                      [], [], ()))
        return [(node.output[0], fields, value_of[state[1]])]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    value = number(other[0]) if len(other) == 1 else None
    step = {("Reshape", "square"): "5d", ("Pad", "5d"): "pad", ("Squeeze", "pool"): "squeeze"}.get((kind, stage))
    if step is not None and ins[0] == at:
        pending[node.output[0]] = (*state[:2], step, *state[3:])
        return True
    kernel = list(attrs.get("kernel_shape", []))
    if kind == "AveragePool" and stage == "pad" and len(kernel) == 3 and kernel[1:] == [1, 1] \
            and list(attrs.get("strides", [1, 1, 1])) == [1, 1, 1]:
        pending[node.output[0]] = (*state[:2], "pool", int(kernel[0]))
        return True
    step = {("Mul", "squeeze"): "alpha", ("Add", "alpha"): "k", ("Pow", "k"): "pow"}.get((kind, stage))
    if step is not None and value is not None:
        pending[node.output[0]] = (*state[:2], step, *state[3:], value)
        return True
    return None


def _layout_step(node: Any, ctx: _Graph) -> bool:
    """Transpose 0 2 3 1 of an image: its channels-last view (the same layer); Transpose 0 3 1 2 of such a
    view: the image again. What reads a view must be an op that computes the same on it (_ANY_LAYOUT,
    a Linear over the channels), else the reader is refused."""
    if node.op_type != "Transpose" or not node.input or node.input[0] not in ctx.value_of:
        return False
    perm, src = list(_attrs(node).get("perm", [])), node.input[0]
    if perm == [0, 2, 3, 1] and src not in ctx.last and len(ctx.shape(src)) == 3:
        ctx.alias(node.output[0], src, True)
        return True
    if perm == [0, 3, 1, 2] and src in ctx.last:
        ctx.alias(node.output[0], src, False)
        return True
    return False


def _linear_step(node: Any, ctx: _Graph) -> bool:
    """MatMul by a constant matrix, and the Add of a constant vector that alone reads it: one Linear (over
    a flat vector, each token or each channels-last position), its weight the matrix transposed."""
    tensors, consts = _const_of(ctx, node)
    if node.op_type != "MatMul" or len(tensors) != 1 or node.input[0] != tensors[0] or len(consts) != 1 \
            or tensors[0] not in ctx.value_of or getattr(consts[0][1], "ndim", 0) != 2:
        return False
    w = consts[0][1]
    src = tensors[0]
    n = Node(node.name, {}, [None, w], [ctx.shape(src)], (), src in ctx.last)
    try:
        fields = FROM_ONNX["MatMul"].layer(n)
    except Unmappable:
        return False
    out, params = node.output[0], {"weight": (node.input[1], w.T)}
    add = _only_reader(ctx, out, "Add")
    if add is not None:
        others, bias = _const_of(ctx, add)
        if others == [out] and len(bias) == 1 and getattr(bias[0][1], "shape", ()) == (w.shape[1],):
            fields["bias"] = True
            params["bias"] = (add.input[bias[0][0]], bias[0][1])
            ctx.skip.add(id(add))
    ctx.emit(node, out, fields, [ctx.value_of[src]], params, ctx.shape(src), src in ctx.last)
    if add is not None and id(add) in ctx.skip:
        ctx.alias(add.output[0], out)
    return True


def _bias_step(node: Any, ctx: _Graph) -> bool:
    """The Add of one value per channel to a layer that has no bias yet and that nothing else reads: that
    layer's bias (Keras's export writes a Conv without bias, then adds the bias on the channels-last view)."""
    import numpy as np

    tensors, consts = _const_of(ctx, node)
    if node.op_type != "Add" or len(tensors) != 1 or len(consts) != 1 or tensors[0] not in ctx.value_of:
        return False
    src, value = tensors[0], np.asarray(consts[0][1])
    layer = ctx.layer(ctx.value_of[src])
    full = ctx.shapes.get(src, ())
    if layer is None or layer.path is None or layer.fields.get("bias") is not False or len(full) < 2 \
            or "bias" not in layer_model(layer.fields).model_fields or value.ndim > len(full):
        return False
    axis = len(full) - 1 if src in ctx.last or len(full) != 4 else 1
    channels = full[axis]
    want = tuple(channels if k == axis else 1 for k in range(len(full)))[len(full) - value.ndim:]
    if value.shape != want or value.dtype.kind != "f" or _sole_reader(ctx, layer.name) is not node:
        return False
    layer.fields["bias"] = True
    ctx.weights[f"{layer.path}.bias"] = np.ascontiguousarray(value.reshape(channels), dtype=np.float32)
    ctx.alias(node.output[0], src)
    return True


def _parameter_step(node: Any, ctx: _Graph) -> bool:
    """A layer times or plus a parameter, or joined with one: a C x 1 x 1 scale times an image, a D scale times
    a sequence (ConvNeXt's and CaiT's layer scale), the same shapes added (a learned affine's bias), a 1 x S x D
    embedding added to a sequence (ViT's pos_embedding), a 1 x 1 x D token
    concatenated before it (ViT's class_token); and a sequence's token i (Gather along axis 1: ViT's
    select_token)."""
    import numpy as np

    tensors, consts = _const_of(ctx, node)
    if len(tensors) != 1 or len(consts) != 1 or tensors[0] not in ctx.value_of or tensors[0] in ctx.last:
        return False
    src, (pos, value) = tensors[0], consts[0]
    shape, kind = ctx.shape(src), node.op_type
    value_shape = tuple(getattr(value, "shape", ()))
    name = node.input[pos]
    per_channel = len(shape) == 3 and value_shape == (shape[0], 1, 1) or len(shape) == 2 and value_shape == (shape[1],)
    if kind == "Mul" and per_channel:
        fields = FROM_ONNX["param:Mul"].layer(node)
    elif kind == "Add" and len(shape) == 2 and value_shape == (1, *shape):
        fields = FROM_ONNX["param:Add"].layer(node)
    elif kind == "Add" and per_channel:
        fields = FROM_ONNX["bias:Add"].layer(node)
    elif kind == "Concat" and pos == 0 and _attrs(node).get("axis") == 1 and len(shape) == 2 \
            and value_shape == (1, 1, shape[1]):
        fields = FROM_ONNX["param:Concat"].layer(node)
        if not name.endswith("class_token"):      # the exporter folds class_token.expand(N, -1, -1) into "expand"
            name = "class_token"
    elif kind == "Gather" and pos == 1 and _attrs(node).get("axis") == 1 and len(shape) == 2 and value_shape == () \
            and 0 <= int(value) < shape[0]:
        fields = FROM_ONNX["param:Gather"].layer(Node(node.name, {"index": int(value)}, [], [shape], ()))
        ctx.emit(node, node.output[0], fields, [ctx.value_of[src]], {}, shape)
        return True
    else:
        return False
    ctx.emit(node, node.output[0], fields, [ctx.value_of[src]], {"": (name, np.asarray(value))}, shape)
    return True


def _constant_step(node: Any, ctx: _Graph) -> bool:
    """A Mul, Add, Sub or Div of a layer's output and one float number (Keras's Rescaling, a scale the
    exporter wrote): the op that ``const:TYPE`` names; a number that changes nothing (+ 0, * 1) is the
    layer itself."""
    import numpy as np

    tensors, consts = _const_of(ctx, node)
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(tensors) != 1 or len(consts) != 1 \
            or tensors[0] not in ctx.value_of or f"const:{node.op_type}" not in FROM_ONNX:
        return False
    pos, value = consts[0]
    value = np.asarray(value)
    if value.size != 1 or value.dtype.kind != "f" or value.ndim > len(ctx.shapes.get(tensors[0], ())):
        return False
    src = tensors[0]
    attrs = {"value": float(value.reshape(-1)[0]), "first": pos == 0}
    fields = FROM_ONNX[f"const:{node.op_type}"].layer(Node(node.name, attrs, [], [ctx.shape(src)], ctx.shape(src)))
    if fields is None:
        ctx.alias(node.output[0], src)
    else:
        ctx.emit(node, node.output[0], fields, [ctx.value_of[src]], {}, ctx.shape(src), src in ctx.last)
    return True


def _view_step(node: Any, ctx: _Graph) -> bool:
    """Reshapes that are no op of their own: a patch convolution's map (kernel = stride, no padding)
    reshaped to N x D x S and transposed to N x S x D (the conv becomes ViT's ``patch_embed``); and a
    tensor flattened whole then gathered back at indices 0, 1, ... in its own shape (the exporter's
    as_strided after a global mean), a reshape to the same shape, or to another and back: the tensor itself."""
    import numpy as np

    if node.op_type not in ("Reshape", "Transpose") or not node.input or node.input[0] not in ctx.value_of:
        return False
    if _identity_chain(node, ctx):
        return True
    if node.op_type != "Reshape":
        return False
    src, out = node.input[0], node.output[0]
    full = ctx.shapes.get(src, ())
    out_full = ctx.shapes.get(out, ())
    gathers = ctx.readers.get(out, [])
    if len(out_full) == 1 and gathers and min(full, default=0) > 0 and _size(full) <= MAX_CHAIN_ELEMENTS and all(
            g.op_type == "Gather" and _attrs(g).get("axis", 0) == 0 and g.input[0] == out and len(g.input) == 2
            and g.input[1] in ctx.consts and np.array_equal(ctx.consts[g.input[1]],
                                                            np.arange(_size(full)).reshape(full))
            for g in gathers):
        for g in gathers:
            ctx.skip.add(id(g))
            ctx.alias(g.output[0], src)
        return True
    turn = _only_reader(ctx, out, "Transpose")
    conv = ctx.layer(ctx.value_of[src])
    if turn is None or conv is None or src in ctx.last or list(_attrs(turn).get("perm", [])) != [0, 2, 1]:
        return False
    f, c = conv.fields, conv.shape
    if not {"out", "kernel", "groups"} <= set(layer_model(f).model_fields) or len(ctx.readers.get(src, [])) != 1 or len(c) != 3 \
            or out_full[1:] != (c[0], c[1] * c[2]) or not (f.get("kernel") == f.get("stride") and
                                                         isinstance(f.get("kernel"), int)) \
            or f.get("padding") != 0 or f.get("dilation") != 1 or f.get("groups") != 1:
        return False
    conv.fields = FROM_ONNX["pattern:patches"].layer(Node(conv.name, f, [], [], ()))
    conv.shape = (c[1] * c[2], c[0])
    ctx.skip.add(id(turn))
    ctx.alias(out, src)
    ctx.alias(turn.output[0], src)
    return True


def _gelu_step(node: Any, ctx: _Graph) -> bool:
    """The exact GELU as the TorchScript exporter writes it before opset 20: x / sqrt(2) (or x times 1 / sqrt(2)),
    Erf, + 1, x times that, times 0.5 (each the only reader of the one before): one ``gelu`` activation."""
    if node.op_type not in ("Div", "Mul") or not node.input or node.input[0] not in ctx.value_of:
        return False
    x = node.input[0]
    c = _scalar(ctx, _other(node, x) or "")
    if c is None or abs((c if node.op_type == "Div" else 1 / c if c else 0) - 2 ** 0.5) > 1e-6:
        return False
    erf = _only_reader(ctx, node.output[0], "Erf")
    one = _only_reader(ctx, erf.output[0], "Add") if erf is not None else None
    times = _only_reader(ctx, one.output[0], "Mul") if one is not None else None
    half = _only_reader(ctx, times.output[0], "Mul") if times is not None else None
    if half is None or _scalar(ctx, _other(one, erf.output[0]) or "") != 1.0 \
            or _other(times, one.output[0]) != x or _scalar(ctx, _other(half, times.output[0]) or "") != 0.5:
        return False
    ctx.skip.update(id(n) for n in (erf, one, times, half))
    fields = FROM_ONNX["Gelu"].layer(Node(node.name, {"approximate": "none"}, [None], [ctx.shape(x)], ctx.shape(x)))
    ctx.emit(half, half.output[0], fields, [ctx.value_of[x]], {}, ctx.shape(x), x in ctx.last)
    return True


def _reduced_axes(ctx: _Graph, node: Any) -> list[int] | None:
    """A ReduceMean's axes (an attribute before opset 18, an input after), each from 0; None where unknown."""
    rank = len(ctx.shapes.get(node.input[0], ())) if node.input else 0
    given = _attrs(node).get("axes")
    if given is None and len(node.input) > 1 and node.input[1]:
        v = ctx.consts.get(node.input[1])
        given = [int(a) for a in v.reshape(-1)] if v is not None and v.dtype.kind in "iu" else None
    if given is None or not rank or any(not -rank <= int(a) < rank for a in given):
        return None
    return sorted(int(a) % rank for a in given)


def _norm_step(node: Any, ctx: _Graph) -> bool:
    """A LayerNorm over the last axis as the TorchScript exporter writes it before opset 17: ReduceMean (the
    mean), Sub, Pow 2, ReduceMean (the variance), + eps, Sqrt, Div, times the weight, + the bias, over a
    sequence's features or a channels-last view's channels: one ``layer_norm`` with that weight and bias."""
    if node.op_type != "ReduceMean" or not node.input or node.input[0] not in ctx.value_of:
        return False
    x, full = node.input[0], ctx.shapes.get(node.input[0], ())
    if not full or _reduced_axes(ctx, node) != [len(full) - 1] or not _attrs(node).get("keepdims", 1):
        return False
    sub = _only_reader(ctx, node.output[0], "Sub")
    if sub is None or list(sub.input) != [x, node.output[0]]:
        return False
    readers = ctx.readers.get(sub.output[0], [])
    power = next((r for r in readers if r.op_type == "Pow" and list(r.input[:1]) == [sub.output[0]]), None)
    div = next((r for r in readers if r.op_type == "Div" and list(r.input[:1]) == [sub.output[0]]), None)
    if len(readers) != 2 or power is None or div is None or _scalar(ctx, power.input[1]) != 2.0:
        return False
    variance = _only_reader(ctx, power.output[0], "ReduceMean")
    plus = _only_reader(ctx, variance.output[0], "Add") if variance is not None else None
    root = _only_reader(ctx, plus.output[0], "Sqrt") if plus is not None else None
    if root is None or _reduced_axes(ctx, variance) != [len(full) - 1] or not _attrs(variance).get("keepdims", 1) \
            or list(div.input) != [sub.output[0], root.output[0]] or _only_reader(ctx, div.output[0], "Mul") is None:
        return False
    eps = _scalar(ctx, _other(plus, variance.output[0]) or "")
    scale = _only_reader(ctx, div.output[0], "Mul")
    shift = _only_reader(ctx, scale.output[0], "Add")
    w_name, b_name = _other(scale, div.output[0]), _other(shift, scale.output[0]) if shift is not None else None
    w, b = ctx.consts.get(w_name or ""), ctx.consts.get(b_name or "")
    if eps is None or w is None or b is None or w.shape != (full[-1],) or b.shape != (full[-1],):
        return False
    n = Node(node.name, {"axis": -1, "epsilon": eps}, [None, w, b], [ctx.shape(x)], ctx.shape(x), x in ctx.last)
    try:
        fields = FROM_ONNX["LayerNormalization"].layer(n)
    except Unmappable:
        return False
    ctx.skip.update(id(r) for r in (sub, power, variance, plus, root, div, scale, shift))
    ctx.skip.discard(id(node))
    ctx.emit(shift, shift.output[0], fields, [ctx.value_of[x]], {"weight": (w_name, w), "bias": (b_name, b)},
             ctx.shape(x), x in ctx.last)
    return True


def _mean_step(node: Any, ctx: _Graph) -> bool:
    """ReduceMean of an image over its height and width without keeping them (``x.mean([2, 3])``, what the
    dynamo exporter writes for a global average pool and a flatten; axes 1 and 2 of a channels-last view, as
    Keras's GlobalAveragePooling2D exports): a ``global_avg_pool``, then a ``flatten``."""
    if node.op_type != "ReduceMean" or not node.input or node.input[0] not in ctx.value_of \
            or _attrs(node).get("keepdims", 1):
        return False
    x, last = node.input[0], node.input[0] in ctx.last
    if len(ctx.shapes.get(x, ())) != 4:
        return False
    full = (ctx.shapes[x][0], *ctx.shape(x))         # N x C x H x W, a channels-last view's too
    if len(full) != 4 or _reduced_axes(ctx, node) != ([1, 2] if last else [2, 3]) or min(full) < 1:
        return False
    pooled = _unique(node.output[0] + "/pooled", set(ctx.shapes))
    ctx.shapes[pooled] = (full[0], full[1], 1, 1)
    pool = FROM_ONNX["GlobalAveragePool"].layer(Node(node.name, {}, [None], [full[1:]], (full[1], 1, 1)))
    ctx.emit(node, pooled, pool, [ctx.value_of[x]], {}, full[1:])
    flat = FROM_ONNX["Flatten"].layer(Node(node.name, {"axis": 1}, [None], [(full[1], 1, 1)], (full[1],)))
    ctx.emit(node, node.output[0], flat, [ctx.value_of[pooled]], {}, (full[1], 1, 1))
    return True


# the pattern steps tried, in order, before FROM_ONNX: each True when it took the node (and maybe others after it)
def _pad_step(node: Any, ctx: _Graph) -> bool:
    """A Pad of a map's height and width (zeros before a Conv, -inf before a MaxPool) that only that Conv or
    MaxPool reads, which pads nothing itself: the padding becomes the reader's own pads (TensorFlow's 'same'
    at stride 2 as archc and Keras export it), which its mapping reads as 'same' where they are TensorFlow's
    and refuses otherwise. True when the Pad is taken."""
    import numpy as np

    if node.op_type != "Pad" or len(node.input) < 2 or node.input[0] not in ctx.value_of or not node.output:
        return False
    attrs = _attrs(node)
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    pads = ctx.consts.get(node.input[1])
    value = ctx.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.float32(0)
    if mode not in ("constant", "edge") or pads is None or value is None or len(node.input) > 3 and node.input[3]:
        return False
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    if len(pads) != 8 or pads[:2] != [0, 0] or pads[4:6] != [0, 0] or min(pads) < 0 or max(pads) > MAX_DIM:
        return False
    # a max over a window that holds a pixel of the map is the same whether the padding repeats the edge
    # (Keras's export on the torch backend) or is -inf: the repeated pixel is in that window too
    fill = float("-inf") if mode == "edge" else \
        float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size == 1 else None
    reader = _only_reader(ctx, node.output[0], "Conv") if fill == 0 else \
        _only_reader(ctx, node.output[0], "MaxPool") if fill == float("-inf") else None
    if reader is None or reader.input[0] != node.output[0] or any(int(p) for p in _attrs(reader).get("pads", [])) \
            or _attrs(reader).get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    kernel = [int(k) for k in _attrs(reader).get("kernel_shape", [])]
    if mode == "edge" and (len(kernel) != 2 or max(pads[2], pads[6]) >= kernel[0] or max(pads[3], pads[7]) >= kernel[1]):
        return False        # (a window wholly in the padding would take the edge's value, not -inf)
    reader.input[0] = node.input[0]         # (the reader, in memory: it reads the map and pads it itself)
    del_pads = [a for a in reader.attribute if a.name == "pads"]
    for a in del_pads:
        reader.attribute.remove(a)
    from onnx import helper

    reader.attribute.append(helper.make_attribute("pads", [pads[2], pads[3], pads[6], pads[7]]))
    ctx.readers.setdefault(node.input[0], []).append(reader)
    return True
