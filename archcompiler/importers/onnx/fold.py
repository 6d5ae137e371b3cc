"""What the exporters compute on constants and static sizes, computed here before the walk (numpy's exact
counterpart of each op, bounded): Constant nodes, an initializer passed through Identity, Shape -> Gather ->
Unsqueeze -> Concat -> Reshape targets, Slice bounds; a size is read only from a shape ONNX's inference
computes from the input's and the initializers' (``_computed``); and the tensors of the file, read as numbers."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import BackendError, error
from ...spec.limits import MAX_DIM
from .files import _DATA_TYPES, MAX_ELEMENTS, _kind, _onnx
from .graph import _Graph, _q, _refuse, _standard, safe_text
from .values import MAX_CHAIN_ELEMENTS, MAX_GIVEN, _folded, _size


def _fix_batch(model: Any) -> None:
    """A batch dimension the file leaves open (Keras's export: 'batch') fixed at 1, in memory: each sample is
    computed alone, and the sizes the graph reads from the shape become fixed."""
    inputs = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim if value.type.tensor_type.HasField("shape") else []
        if value.name not in inputs and len(dims) == 4 and not dims[0].HasField("dim_value") \
                and all(d.HasField("dim_value") for d in dims[1:]):
            dims[0].dim_value = 1


def _same_type_cast(node: Any) -> bool:
    """A Cast to float of a layer's output (float already): the value itself (Keras's export casts its input)."""
    return node.op_type == "Cast" and _standard(node) and int(_attrs(node).get("to", 0)) == 1


def _concat_of_one(node: Any, ctx: _Graph) -> bool:
    """A Concat of one value along one of its axes: that value (torch.cat([x], 1), DenseNet's first layer of each
    block as the TorchScript exporter writes it)."""
    if node.op_type != "Concat" or not _standard(node) or len(node.input) != 1 or len(node.output) != 1:
        return False
    axis, rank = _attrs(node).get("axis"), len(ctx.shapes.get(node.input[0], ()))
    return isinstance(axis, int) and rank > 0 and -rank <= axis < rank


def _initializers(g: Any, path: Path, external: set[Path], budget: list[int]) -> dict[str, Any]:
    consts: dict[str, Any] = {}
    for t in g.initializer:
        if t.name in consts:
            raise BackendError([error(f"initializer {_q(t.name)} is given twice", "import",
                                      hint="in an ONNX graph each value is written once")])
        consts[t.name] = _tensor(t, path, external, budget)
    return consts


# the ops whose value is computed here where every input is a constant (or, for Shape and Size, where the input's
# shape is known): the exporters' arithmetic on static sizes (Shape -> Gather -> Unsqueeze -> Concat -> Reshape),
# Constant nodes, an initializer passed through Identity (the TorchScript exporter shares equal initializers so),
# and constants reshaped, expanded or cast; each computed exactly as ONNX defines it, or left to the walk (which
# refuses what it cannot read, by the node's name)
_FOLDED = {"Constant", "Identity", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice",
           "Reshape", "Transpose", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Sqrt", "Equal", "Where",
           "ConstantOfShape", "Expand"}


def _fold(g: Any, consts: dict[str, Any], shapes: dict[str, tuple[int, ...]], verified: set[str], path: Path,
          external: set[Path], budget: list[int]) -> bool:
    """Compute, in the file's order, the nodes of _FOLDED whose inputs are all constants (a Shape or Size: whose
    input's shape is known, the batch included, and ``verified``: computed from the input's), adding their
    outputs to ``consts``; a new array holds at most
    MAX_CHAIN_ELEMENTS numbers, counted against ``budget`` (all tensors together). Nothing from the file runs:
    each op is numpy's exact counterpart, its attributes and inputs checked first; a node that does not fold is
    left for the walk. True where a value was computed and some value's shape is unknown (it may be known now
    that the constants are: _computed)."""
    import numpy as np

    onnx = _onnx()
    folded = False
    for node in g.node:
        if node.op_type not in _FOLDED or not _standard(node) or len(node.output) != 1 or not node.output[0] \
                or node.output[0] in consts:
            continue
        if node.op_type == "Constant":
            attr = {a.name: a for a in node.attribute}
            if len(attr) != 1:
                continue
            key, a = next(iter(attr.items()))
            if key == "value" and a.type == onnx.AttributeProto.TENSOR:
                consts[node.output[0]] = _tensor(a.t, path, external, budget,
                                                 f"node {safe_text(node.name) or '(unnamed)'} (Constant): its value")
            elif key in ("value_int", "value_ints") and a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS):
                consts[node.output[0]] = np.asarray(a.i if key == "value_int" else list(a.ints), dtype=np.int64)
            elif key in ("value_float", "value_floats") and a.type in (onnx.AttributeProto.FLOAT,
                                                                       onnx.AttributeProto.FLOATS):
                consts[node.output[0]] = np.asarray(a.f if key == "value_float" else list(a.floats), dtype=np.float32)
            if node.output[0] in consts:
                shapes[node.output[0]] = consts[node.output[0]].shape
                folded = True
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            continue
        try:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            value = _folded(node.op_type, attrs, list(node.input), consts,
                            shapes if node.op_type not in ("Shape", "Size") or node.input[0] in verified else {})
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError,
                FloatingPointError):
            value = None            # not folded: the walk reads the node, or refuses it by name
        if value is None:
            continue
        value = np.asarray(value)
        view = node.op_type in ("Identity", "Reshape", "Squeeze", "Unsqueeze")    # (no new numbers)
        if value.dtype.kind not in "biuf" or not view and value.size > MAX_CHAIN_ELEMENTS:
            continue
        if not view:
            budget[0] -= value.size
            if budget[0] < 0:
                raise BackendError([error(f"node {safe_text(node.name) or '(unnamed)'} ({node.op_type}): the tensors hold "
                                          f"more than {MAX_ELEMENTS} numbers", "import")])
        consts[node.output[0]] = value
        shapes[node.output[0]] = value.shape
        folded = True
    return folded and any(min(shapes.get(o, (-1,)), default=0) < 0 for n in g.node for o in n.output[:1]
                          if o and o not in consts)


MAX_FOLD_ROUNDS = 64    # (each round makes known the sizes that the last one's constants decide)
MAX_PROPAGATED = 2 ** 16


def _computed(model: Any, consts: dict[str, Any], shapes: dict[str, tuple[int, ...]], verified: set[str]) -> None:
    """ONNX's shape inference on the graph alone (without the shapes the file declares for computed values, and
    without the nodes computed as constants: their values given as initializers, the large ones as inputs of
    their shape and type): each shape it finds is added to ``shapes`` and ``verified``; one the file declares
    otherwise is refused (the inference would have kept the file's)."""
    from onnx import helper, numpy_helper, shape_inference

    g = model.graph
    keep = [n for n in g.node if not (n.output and all(o in consts for o in n.output))]
    used = sorted({i for n in keep for i in n.input if i in consts})
    inputs = [i for i in g.input if i.name not in consts]
    given = []
    try:
        for name in used:
            arr = consts[name]
            if arr.size <= MAX_GIVEN:
                given.append(numpy_helper.from_array(arr, name))
            else:
                inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                            list(arr.shape)))
        outputs = [helper.make_empty_tensor_value_info(o.name) for o in g.output]
        graph = helper.make_graph(keep, g.name or "graph", inputs, outputs, given)
        again = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        plain = shape_inference.infer_shapes(again)
        # with data_prop, the sizes read by Shape -> Gather -> Reshape are known; but it copies what a Gather or a
        # Slice reads, whatever its size (a 1-d view of a 3 x 65536 x 65536 input: 100 GB): not where one is large
        large = any(vi.type.tensor_type.HasField("shape") and len(vi.type.tensor_type.shape.dim) <= 1
                    and _size(tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)) > MAX_PROPAGATED
                    for vi in [*plain.graph.value_info, *plain.graph.output])
        again = plain if large else shape_inference.infer_shapes(again, data_prop=True)
    except Exception:  # noqa: BLE001 (no shape is verified: none is read as a size)
        return
    for vi in [*again.graph.value_info, *again.graph.output]:
        if vi.name in consts or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        if min(shape, default=0) < 0:
            continue
        declared = shapes.get(vi.name)
        if declared is not None and min(declared, default=0) >= 0 and declared != shape:
            raise BackendError([error(f"the file declares the shape {list(declared)} for {_q(vi.name)}, but its nodes "
                                      f"compute {list(shape)}", "import",
                                      hint="the shapes a file declares must be those its nodes compute")])
        shapes[vi.name] = shape
        verified.add(vi.name)


def _type_name(data_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(data_type)
    except ValueError:
        return f"data type {data_type}"


def _tensor(t: Any, path: Path, external: set[Path], budget: list[int], what: str | None = None) -> Any:
    """The numbers of a TensorProto (an initializer, a Constant node's value) as a numpy array, its
    declared type, shape and data checked against each other before numpy reads them: a number type of
    _DATA_TYPES, dimensions within MAX_DIM, and raw_data of exactly the bytes (or a typed field of
    exactly the numbers) the shape calls for; external data (added to ``external``) read by _external.
    ``budget`` holds how many numbers may still be read (all tensors together, at most MAX_ELEMENTS);
    ``what`` names the tensor in a refusal (default: the initializer by its name)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    dims = [int(d) for d in t.dims]
    kind = _DATA_TYPES.get(t.data_type)

    def refuse(why: str, hint: str | None = None) -> BackendError:
        return BackendError([error(f"{what or 'initializer ' + _q(t.name)} ({kind or _type_name(t.data_type)} "
                                   f"{safe_text(dims, 80)}): {why}", "import", hint=hint)])
    if any(d < 0 or d > MAX_DIM for d in dims):
        raise refuse(f"a dimension is negative or over {MAX_DIM}")
    if kind is None:
        raise refuse("archc reads tensors of numbers only",
                     hint=f"the types archc reads: {', '.join(_DATA_TYPES.values())}")
    count = _size(tuple(dims))
    budget[0] -= count
    if budget[0] < 0:
        raise refuse(f"the tensors hold more than {MAX_ELEMENTS} numbers")
    if t.HasField("segment"):
        raise refuse("a segment of a tensor (archc reads whole tensors)")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    if t.data_location == TensorProto.EXTERNAL:
        array = _external(t, path, dtype, count, refuse, external)
    else:
        if t.HasField("raw_data"):
            need = count * dtype.itemsize
            if len(t.raw_data) != need:
                raise refuse(f"its raw_data is {len(t.raw_data)} bytes; {count} {kind} numbers are {need} bytes")
        else:
            stored = helper.tensor_dtype_to_field(t.data_type)
            if len(getattr(t, stored)) != count:
                raise refuse(f"it holds {len(getattr(t, stored))} numbers ({stored}); its shape calls for {count}")
        try:
            array = numpy_helper.to_array(t)
        except Exception as exc:  # noqa: BLE001 (onnx's own reading of numbers checked above: a backstop)
            raise refuse(f"its numbers cannot be read ({type(exc).__name__}: {safe_text(exc, 100)})") from None
    if tuple(array.shape) != tuple(dims):
        raise refuse(f"its numbers have the shape {list(array.shape)}")
    return array


def _external(t: Any, path: Path, dtype: Any, count: int, refuse: Callable[..., BackendError],
              external: set[Path]) -> Any:
    """A tensor whose numbers are in another file (the exporter's external data, for a model over
    protobuf's 2 GB): read only from a plain file beside the model (its ``location`` a file name: no folder,
    no ``..``; a regular file, not a link, with no other name: a hard link could be a file anywhere), at
    the offset and length the tensor gives, which must be its own size. The file is added to ``external``."""
    import numpy as np

    info = {e.key: e.value for e in t.external_data}
    where = info.get("location", "")
    hint = "external data is read only from a plain file beside the model, named by a plain file name"
    if not where or where in (".", "..") or any(c in where for c in "/\\\0:") or where != where.strip():
        raise refuse(f"external data {_q(where)}: its location is not a plain file name", hint)
    file = path.parent / where
    try:
        offset = int(info.get("offset", 0))
        size = count * dtype.itemsize
        length = int(info.get("length", size))
    except ValueError as exc:
        raise refuse(f"external data {_q(where)}: unreadable ({type(exc).__name__})", hint) from None
    try:        # not followed if a link; a pipe or a device is never waited on (and refused below)
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"no such file beside {safe_text(path.name)}" \
            if exc.errno == errno.ENOENT else f"cannot be read ({safe_text(exc.strerror or exc)})"
        raise refuse(f"external data {_q(where)}: {why}", hint) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"external data {_q(where)}: it is {_kind(st.st_mode)}, not a plain file", hint)
        if st.st_nlink != 1:
            raise refuse(f"external data {_q(where)}: the file has {st.st_nlink} names (hard links); archc reads "
                         "external data only from a file that is nowhere else", hint)
        if offset < 0 or length != size or offset + length > st.st_size:
            raise refuse(f"external data {_q(where)}: offset {offset} and length {length} do not hold its {count} "
                         f"{dtype.name} numbers in a file of {st.st_size} bytes", hint)
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise refuse(f"external data {_q(where)}: the file ended early", hint)
    external.add(file)
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(tuple(t.dims))


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    try:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    except Exception as exc:  # noqa: BLE001 (an attribute of an unknown type: refused by node)
        raise _refuse(node, f"an attribute archc cannot read ({type(exc).__name__})") from None
