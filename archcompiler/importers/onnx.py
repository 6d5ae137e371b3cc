"""From ONNX: a model file read as data becomes a spec and a weights file.

Nothing in the file runs: the graph is read with the onnx package's protobuf parser and its shape
inference, each node maps through ``FROM_ONNX`` below (keyed by ONNX op type), and the
initializers are written as a safetensors file whose keys are the spec's module paths (``archc
build SPEC --weights FILE`` loads it). The file is bounded like every untrusted input: its size,
its node and initializer counts, every dimension; subgraphs (If, Loop) are refused. A node that does
not map is refused with its name, its op type and the closest op type archc reads.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, error
from ..spec.limits import MAX_DIM, MAX_LAYERS
from .flat import Flat, Item, place

MAX_ONNX_BYTES = 2 * 1024 ** 3          # an ONNX file (its protobuf limit)
MAX_NODES = 4 * MAX_LAYERS
MAX_ELEMENTS = 2 ** 31                  # all initializers together


class _No(ValueError):
    """A node of a known op type whose attributes archc has no op for."""


@dataclass
class Node:
    """What a mapping sees: the node's attributes, its inputs' constant values (None for a tensor
    computed by the graph), the per-sample shapes of its tensor inputs and of its output."""

    name: str
    attrs: dict[str, Any]
    consts: list[Any]
    shapes: list[tuple[int, ...]]
    shape: tuple[int, ...]


def _need(ok: bool, why: str) -> None:
    if not ok:
        raise _No(why)


def _one(v: Any) -> Any:
    v = [int(x) for x in v]
    return v[0] if len(set(v)) == 1 else v


def _pads(n: Node) -> Any:
    pads = list(n.attrs.get("pads", [0, 0, 0, 0]))
    _need(pads[:2] == pads[2:], f"asymmetric pads {pads}")
    _need(n.attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"), "auto_pad")
    return _one(pads[:2])


def _conv(n: Node) -> dict:
    w = n.consts[1]
    _need(w is not None, "a weight that is computed, not an initializer")
    out = {"op": "conv", "out": int(w.shape[0]), "kernel": _one(w.shape[2:]), "stride": _one(n.attrs.get("strides", [1, 1])),
           "padding": _pads(n), "dilation": _one(n.attrs.get("dilations", [1, 1])), "groups": int(n.attrs.get("group", 1)),
           "bias": len(n.consts) > 2}
    return out


def _gemm(n: Node) -> dict:
    _need(n.attrs.get("alpha", 1.0) == 1.0 and n.attrs.get("beta", 1.0) == 1.0 and not n.attrs.get("transA", 0),
          "alpha, beta or transA")
    w = n.consts[1]
    _need(w is not None and len(n.shapes[0]) == 1, "a product with a computed matrix")
    out = w.shape[0] if n.attrs.get("transB", 0) else w.shape[1]
    return {"op": "linear", "out": int(out), "bias": len(n.consts) > 2}


def _matmul(n: Node) -> dict:
    w = n.consts[1]
    _need(w is not None and len(n.shapes[0]) == 1 and w.ndim == 2, "a product with a computed matrix")
    return {"op": "linear", "out": int(w.shape[1]), "bias": False}


def _f32(v: Any) -> float:
    """A float attribute (stored in 32 bits) as the decimal it was written as: 1e-05, not 9.9999997e-06."""
    return float(f"{float(v):.7g}")


def _bn(n: Node) -> dict:
    return {"op": "batch_norm", "eps": _f32(n.attrs.get("epsilon", 1e-5)),
            "momentum": _f32(1 - _f32(n.attrs.get("momentum", 0.9)))}


def _pool(name: str, average: bool = False) -> Callable[[Node], dict]:
    def layer(n: Node) -> dict:
        k = _one(n.attrs["kernel_shape"])
        out = {"op": name, "kernel": k, "stride": _one(n.attrs.get("strides", [1, 1])), "padding": _pads(n)}
        _need(_one(n.attrs.get("dilations", [1, 1])) == 1, "a dilated pooling")
        if n.attrs.get("ceil_mode"):
            out["ceil_mode"] = True
        if average and not n.attrs.get("count_include_pad", 0) and out["padding"] != 0:
            out["count_include_pad"] = False
        return out
    return layer


def _clip(n: Node) -> dict:
    lo, hi = (n.consts + [None, None, None])[1:3]
    lo = float(lo) if lo is not None else n.attrs.get("min")
    hi = float(hi) if hi is not None else n.attrs.get("max")
    _need(lo == 0 and hi == 6, f"Clip({lo}, {hi}) (archc's relu6 is Clip(0, 6))")
    return {"op": "relu6"}


def _hardsigmoid(n: Node) -> dict:
    _need(abs(n.attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and n.attrs.get("beta", 0.5) == 0.5,
          "alpha/beta other than PyTorch's 1/6 and 0.5")
    return {"op": "hardsigmoid"}


def _reduce_mean(n: Node) -> dict:
    axes = n.attrs.get("axes") or (list(n.consts[1]) if len(n.consts) > 1 and n.consts[1] is not None else None)
    _need(axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3] and n.attrs.get("keepdims", 1),
          "a mean over other axes than height and width")
    return {"op": "global_avg_pool"}


def _flatten(n: Node) -> dict:
    _need(n.attrs.get("axis", 1) == 1, "a flatten at another axis than 1")
    return {"op": "flatten"}


def _reshape(n: Node) -> dict:
    target = n.consts[1]
    _need(target is not None and len(target) == 2 and len(n.shape) == 1, "a reshape other than a flatten")
    return {"op": "flatten"}


def _softmax(n: Node) -> dict:
    _need(n.attrs.get("axis", -1) in (1, -1) and len(n.shape) == 1, "a softmax over another axis")
    return {"op": "softmax"}


def _lrn(n: Node) -> dict:
    return {"op": "lrn", "size": int(n.attrs["size"]), "alpha": _f32(n.attrs.get("alpha", 1e-4)),
            "beta": _f32(n.attrs.get("beta", 0.75)), "k": _f32(n.attrs.get("bias", 1.0))}


def _gelu(n: Node) -> dict:
    approximate = n.attrs.get("approximate", "none")
    _need(approximate in ("none", b"none"), f"approximate={approximate!r} (archc's gelu is the exact one)")
    return {"op": "gelu"}


def _join(name: str, same_shape: bool) -> Callable[[Node], dict]:
    def layer(n: Node) -> dict:
        _need(all(c is None for c in n.consts), f"a {name} with a constant")
        _need(not same_shape or all(s == n.shape for s in n.shapes), f"a {name} of different shapes")
        return {"op": name}
    return layer


def _concat(n: Node) -> dict:
    _need(n.attrs.get("axis") == 1, "a concatenation along another axis than the channels")
    return {"op": "concat"}


def _leaky(n: Node) -> dict:
    _need(abs(n.attrs.get("alpha", 0.01) - 0.01) < 1e-9, "a slope other than 0.01")
    return {"op": "leaky_relu"}


# ONNX op type -> the spec layer; the weights each takes (initializer positions -> state_dict suffix)
FROM_ONNX: dict[str, tuple[Callable[[Node], dict], dict[int, str]]] = {
    "Conv": (_conv, {1: "weight", 2: "bias"}),
    "Gemm": (_gemm, {1: "weight", 2: "bias"}),
    "MatMul": (_matmul, {1: "weight"}),
    "BatchNormalization": (_bn, {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"}),
    "Relu": (lambda n: {"op": "relu"}, {}),
    "Clip": (_clip, {}),
    "Sigmoid": (lambda n: {"op": "sigmoid"}, {}),
    "Tanh": (lambda n: {"op": "tanh"}, {}),
    "LeakyRelu": (_leaky, {}),
    "HardSwish": (lambda n: {"op": "hardswish"}, {}),
    "Gelu": (_gelu, {}),
    "HardSigmoid": (_hardsigmoid, {}),
    "Mul": (_join("mul", False), {}),
    "Add": (_join("add", True), {}),
    "Concat": (_concat, {}),
    "MaxPool": (_pool("max_pool"), {}),
    "AveragePool": (_pool("avg_pool", True), {}),
    "GlobalAveragePool": (lambda n: {"op": "global_avg_pool"}, {}),
    "ReduceMean": (_reduce_mean, {}),
    "Flatten": (_flatten, {}),
    "Reshape": (_reshape, {}),
    "Softmax": (_softmax, {}),
    "LRN": (_lrn, {}),
    # Split (into two halves along the channels) and Transpose (as a channel shuffle between two
    # Reshapes) are read as patterns: see _shuffle_step
}
_PASS = {"Identity", "Dropout"}         # the value passes through in inference


def _refuse(node: Any, why: str, hint: str | None = None) -> BackendError:
    close = difflib.get_close_matches(node.op_type, sorted(FROM_ONNX), n=1, cutoff=0.0)
    return BackendError([error(f"node {node.name or '(unnamed)'} ({node.op_type}): {why}", node.name or node.op_type,
                               hint=hint or f"the closest op type archc reads is {close[0] if close else 'Conv'}")])


def read(path: str | Path, name: str | None = None) -> tuple[Flat, dict[str, Any]]:
    """The flat layers of the ONNX file and its weights (state_dict key -> numpy array)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise BackendError([error(f"{path} does not exist", "import")])
    if size > MAX_ONNX_BYTES:
        raise BackendError([error(f"{path} is {size} bytes; at most {MAX_ONNX_BYTES} are read", "import")])
    try:
        model = onnx.load(str(path), load_external_data=False)
        model = shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 (a malformed file: say so, without a traceback)
        raise BackendError([error(f"{path} is not a readable ONNX model: {str(exc)[:200]}", "import")]) from None
    g = model.graph
    if len(g.node) > MAX_NODES or len(g.initializer) > MAX_NODES:
        raise BackendError([error(f"{path} has {len(g.node)} nodes and {len(g.initializer)} initializers; "
                                  f"at most {MAX_NODES} of each are read", "import")])
    consts: dict[str, Any] = {}
    total = 0
    for t in g.initializer:
        if any(d < 0 or d > MAX_DIM for d in t.dims) or t.data_location == onnx.TensorProto.EXTERNAL:
            raise BackendError([error(f"initializer {t.name!r}: dimensions {list(t.dims)} or external data", "import")])
        total += int(np.prod(t.dims)) if t.dims else 1
        if total > MAX_ELEMENTS:
            raise BackendError([error(f"the initializers hold more than {MAX_ELEMENTS} numbers", "import")])
        consts[t.name] = numpy_helper.to_array(t)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(shapes.get(inputs[0].name, ())) != 4 or min(shapes[inputs[0].name][1:]) < 1:
        raise BackendError([error("the model must have one input of a fixed N x C x H x W shape", "import")])
    if len(g.output) < 1:
        raise BackendError([error("the model has no output", "import")])
    value_of: dict[str, str] = {inputs[0].name: "input"}
    items: list[Item] = []
    weights: dict[str, Any] = {}
    taken: set[str] = set()
    pending: dict[str, tuple] = {}      # a value midway through a channel shuffle -> its state
    for node in g.node:
        if node.op_type == "Constant":
            attr = {a.name: a for a in node.attribute}
            if "value" not in attr:
                raise _refuse(node, "a Constant other than a tensor")
            consts[node.output[0]] = numpy_helper.to_array(attr["value"].t)
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise _refuse(node, "a subgraph (control flow)", "archc writes one graph for every input")
        if node.op_type in _PASS and node.input and node.input[0] in value_of:
            for out in node.output[:1]:
                value_of[out] = value_of[node.input[0]]
            continue
        made = _lrn_step(node, consts, value_of, pending)
        if made is None:
            made = _shuffle_step(node, consts, shapes, value_of, pending)
        if made is True:
            continue
        if made is not None:             # a pattern complete (a channel shuffle or split, LRN): one layer per output
            for out, fields, src in made:
                layer = _unique("%" + out, taken)
                items.append(Item(layer, fields, [src], node.op_type, None, None, shapes.get(out, ())[1:],
                                  (), node.op_type))
                value_of[out] = layer
            continue
        entry = FROM_ONNX.get(node.op_type)
        if entry is None or node.domain not in ("", "ai.onnx"):
            raise _refuse(node, "has no archc op")
        tensor_ins = [i for i in node.input if i and i not in consts]
        for i in tensor_ins:
            if i not in value_of:
                raise _refuse(node, f"reads {i!r}, which is not a layer's output")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        n = Node(node.name, attrs, [consts.get(i) if i else None for i in node.input],
                 [shapes.get(i, ())[1:] for i in tensor_ins], shapes.get(node.output[0], ())[1:])
        try:
            fields = entry[0](n)
        except _No as exc:
            raise _refuse(node, str(exc), f"archc reads {node.op_type} only where the reason above does not hold") \
                from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise _refuse(node, f"unexpected attributes or inputs ({type(exc).__name__})") from None
        params = {suffix: node.input[pos] for pos, suffix in entry[1].items() if pos < len(node.input) and node.input[pos]}
        holder = None
        if params:
            first = next(iter(params.values()))
            base = re.sub(r"\.(weight|bias|running_mean|running_var)$", "", first)
            holder = base if re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", base) and base not in taken else None
            if holder is None:
                holder = _unique(f"{node.op_type.lower()}", taken)
        layer = holder if holder is not None else _unique("%" + node.output[0], taken)
        taken.add(layer)
        for suffix, init in params.items():
            arr = consts[init]
            if node.op_type == "Gemm" and suffix == "weight" and not attrs.get("transB", 0):
                arr = arr.T
            if node.op_type == "MatMul" and suffix == "weight":
                arr = arr.T
            weights[f"{layer}.{suffix}"] = np.ascontiguousarray(arr)
        if node.op_type == "BatchNormalization":
            weights[f"{layer}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
        scope = layer.rpartition(".")[0] if holder else None
        items.append(Item(layer, fields, [value_of[i] for i in tensor_ins], node.op_type, holder, scope,
                          n.shape, n.shapes[0] if n.shapes else (), node.op_type))
        value_of[node.output[0]] = layer
        if len(items) > MAX_LAYERS:
            raise BackendError([error(f"the model has more than {MAX_LAYERS} layers", "import")])
    result = value_of.get(g.output[0].name)
    if result is None:
        raise BackendError([error(f"the output {g.output[0].name!r} is not computed by a mapped node", "import")])
    result, _ = place(items, result, {}, lambda base: _unique(base, taken))
    return Flat(name or _clean(path.stem) or "model", tuple(shapes[inputs[0].name][1:]), items, str(path),
                {}, result), weights


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
        return [(node.output[0], {"op": "lrn", "size": size, "alpha": alpha, "beta": beta, "k": k}, value_of[state[1]])]
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


def _shuffle_step(node: Any, consts: dict, shapes: dict, value_of: dict, pending: dict) -> Any:
    """ShuffleNet's channel shuffle as exporters write it (Reshape into N x g x C/g x H x W, Transpose
    perm 0 2 1 3 4, Reshape back) and its split (Split along the channels into two halves): True when
    the node is a step (its state in ``pending``), the finished layers [(output, fields, input)] when
    the pattern is complete, None when it is no such step."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    src = node.input[0] if node.input else None
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
        return [(node.output[0], {"op": "channel_shuffle", "groups": state[2]}, state[1])]
    if node.op_type == "Split" and src in value_of and attrs.get("axis") == 1 and len(node.output) == 2:
        halves = [shapes.get(o, ())[1:2] for o in node.output]
        sizes = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        equal = halves[0] == halves[1] and (sizes is None or len(set(int(v) for v in sizes)) == 1)
        if equal:
            return [(o, {"op": "channel_split", "half": h}, value_of[src]) for o, h in zip(node.output, ("first", "second"))]
    return None


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_")


def _unique(base: str, taken: set[str]) -> str:
    out, k = base, 0
    while out in taken:
        k += 1
        out = f"{base}_{k}"
    taken.add(out)
    return out


def import_onnx(path: str | Path, output: str | None, weights: str | None = None, name: str | None = None,
                schema: str = "archc.schema.json", blocks: bool = True) -> str:
    """The spec text of the ONNX file; its weights written as safetensors beside ``output`` (or to
    ``weights``) when there is somewhere to write them."""
    from ..spec import load_spec
    from .structure import spec_text

    flat, state = read(path, name)
    text = spec_text(flat, schema=schema, blocks=blocks)
    load_spec(text)
    target = weights or (str(Path(output).with_suffix(".safetensors")) if output else None)
    if target:
        save_weights(state, target)
        text = text.replace("# check, draw and build read it;",
                            f"# check, draw and build read it (weights: --weights {Path(target).name});", 1)
    return text


def save_weights(state: dict[str, Any], target: str | Path) -> Path:
    from safetensors.numpy import save

    from ..io import write_bytes
    return write_bytes(target, save(state, metadata={"archc": "imported from ONNX"}))
