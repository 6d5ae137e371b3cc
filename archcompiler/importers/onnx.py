"""From ONNX: a model file read as data becomes a spec and a weights file.

Nothing in the file runs: the graph is read with the onnx package's protobuf parser and its shape
inference, each node maps through ``FROM_ONNX`` below (keyed by ONNX op type), and the
initializers are written as a safetensors file whose keys are the spec's module paths (``archc
build SPEC --weights FILE`` loads it). The file is bounded like every untrusted input: its size,
its node and initializer counts, every dimension; subgraphs (If, Loop) are refused; external data
(a model over protobuf's 2 GB) is read only from a plain file beside the model. A node that does
not map is refused with its name, its op type and the closest op type archc reads.

Before the walk, what the exporters compute on constants and on static sizes is computed here (``_fold``,
numpy's exact counterpart of each op, bounded): Constant nodes, an initializer passed through Identity (the
TorchScript exporter shares equal initializers so), Shape -> Gather -> Unsqueeze -> Concat -> Reshape targets,
Slice bounds and attention scales read from the shape, the class token expanded to the batch. A size is read
only from a shape ONNX's inference computes from the input's and the initializers' (``_computed``: a shape the
file declares otherwise is refused), and each round of constants makes the next shapes known.

Besides the one-node mappings of ``FROM_ONNX``, pattern steps (``_STEPS``, and the LRN and channel
shuffle steps) read what the exporter writes for one archc op as many nodes: channels-last views
(Transpose 0 2 3 1 and back), a MatMul and its bias Add (a Linear), ViT's patch embedding, class
token, position embedding and nn.MultiheadAttention, and the window attention and patch merging of
Swin, Swin V2 and MaxViT; and what the TorchScript exporter writes before the opsets that have the op: the
exact GELU (Div, Erf, Add, Mul, Mul) and LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul,
Add); ReduceMean over H and W without keepdims (``x.mean([2, 3])``) is a global pool and a flatten, a Concat
of one value that value. Each checks the constants that decide what is computed (the weights'
shapes, the scale, the position bias, the shift's mask) and gives the node to the next step, or to
FROM_ONNX's refusal, where one does not hold.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NOWHERE, ArchcError, BackendError, Location, error
from ..ops import FROM_ONNX, Unmappable, onnx_fields
from ..spec.limits import MAX_DIM, MAX_LAYERS
from .flat import Flat, Item, place
from .text import model as layer_model

MAX_ONNX_BYTES = 2 * 1024 ** 3          # an ONNX file (its protobuf limit)
MAX_NODES = 4 * MAX_LAYERS
MAX_ELEMENTS = 2 ** 31                  # all initializers together
MAX_TOP_FIELDS = 4096                   # the ModelProto fields walked before the file is read whole
# the fields of ONNX's ModelProto -> their protobuf wire type (0: a number, 2: bytes or a message)
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
# the initializer types archc reads (TensorProto.DataType -> its name): numbers safetensors and torch hold
_DATA_TYPES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL",
               10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 16: "BFLOAT16"}


@dataclass
class Node:
    """What a mapping sees: the node's attributes, its inputs' constant values (None for a tensor
    computed by the graph), the per-sample shapes of its tensor inputs and of its output."""

    name: str
    attrs: dict[str, Any]
    consts: list[Any]
    shapes: list[tuple[int, ...]]
    shape: tuple[int, ...]
    last: bool = False              # its tensor inputs are channels-last views (archc's shapes given: C x H x W)


_f32 = onnx_fields.f32
_PASS = {"Identity", "Dropout"}         # the value passes through in inference


def _standard(node: Any) -> bool:
    """The node is an operator of ONNX's standard domain (what archc reads; a custom domain's op of the
    same name may compute anything)."""
    return node.domain in ("", "ai.onnx")


def _safe(text: Any, limit: int = 200) -> str:
    """Text from the file (a name, an op type) as a message may show it: on one line, its control and
    other unprintable characters escaped as repr would (an ANSI escape in a node's name is shown as
    ``\\x1b``, never sent to the terminal), cut after ``limit`` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _q(text: Any) -> str:
    """A name from the file, quoted (repr, which escapes what is not printable) and cut to 200 characters."""
    text = str(text)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _refuse(node: Any, why: str, hint: str | None = None) -> BackendError:
    close = difflib.get_close_matches(node.op_type, sorted(k for k in FROM_ONNX if ":" not in k), n=1, cutoff=0.0)
    name, op = _safe(node.name), _safe(node.op_type, 60)
    return BackendError([error(f"node {name or '(unnamed)'} ({op}): {why}", name or op,
                               hint=hint or f"the closest op type archc reads is {close[0] if close else 'Conv'}")])


def _fail(path: Path, message: str, hint: str | None = None) -> BackendError:
    """A refusal of the file as a whole, located at it."""
    return BackendError([error(message, "import", Location(_safe(path, 1000)), hint=hint)])


@dataclass
class _Graph:
    """What the reader knows while it walks the nodes: the constants, every value's shape (with the
    batch), the layer each value is (``value_of``), the values that are a layer's channels-last view
    (N x H x W x C after a Transpose 0 2 3 1: ConvNeXt's and Swin's layout), each value's readers,
    the nodes a pattern has already taken, the layers and their weights."""

    consts: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    value_of: dict[str, str]
    readers: dict[str, list[Any]]
    last: set[str] = field(default_factory=set)
    skip: set[int] = field(default_factory=set)
    items: list[Item] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    taken: set[str] = field(default_factory=lambda: _Taken())
    pending: dict[str, tuple] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)     # value -> the node that computes it
    order: list[Any] = field(default_factory=list)            # the nodes in the file's (topological) order
    index: list[Item] = field(default_factory=list)           # the items layer() has indexed by name, in order
    by_name: dict[str, Item] = field(default_factory=dict)

    def layer(self, name: str) -> Item | None:
        """The layer of that name (an index of ``items``, brought up to date here: one lookup per node, not a
        scan of every layer before it)."""
        for it in self.items[len(self.index):]:
            self.index.append(it)
            self.by_name[it.name] = it
        return self.by_name.get(name)

    def shape(self, value: str) -> tuple[int, ...]:
        """The per-sample shape archc gives the value: C x H x W for a channels-last view."""
        s = self.shapes.get(value, ())[1:]
        return (s[2], s[0], s[1]) if value in self.last and len(s) == 3 else s

    def emit(self, node: Any, out: str, fields: dict, sources: list[str], params: dict[str, tuple[str, Any]],
             in_shape: tuple[int, ...] = (), last: bool = False) -> Item:
        """One layer computing ``out`` from the layers ``sources``; ``params``: state_dict suffix (empty for
        a module that is a parameter itself) -> (initializer name, array); ``last``: ``out`` is a channels-last
        view. Its name is the module path the initializers' names give, where they give one."""
        import numpy as np

        if last:
            self.last.add(out)

        holder = None
        for init, arr in params.values():
            if getattr(arr, "size", 1) == 0:
                raise _refuse(node, f"its parameter {_q(init)} is empty (a dimension is 0)")
        if params:
            for suffix, (init, _) in params.items():
                base = init[:-len(suffix) - 1] if suffix and init.endswith("." + suffix) else None if suffix else init
                if base and _MODULE.fullmatch(base) and base not in self.taken:
                    holder = base
                    break
            holder = holder or _unique(node.op_type.lower(), self.taken)
            self.taken.add(holder)
            for suffix, (_, arr) in params.items():
                self.weights[f"{holder}.{suffix}" if suffix else holder] = np.ascontiguousarray(arr)
        layer = holder if holder is not None else _unique("%" + out, self.taken)
        scope = layer.rpartition(".")[0] if holder else None
        item = Item(layer, fields, sources, node.op_type, holder, scope, self.shape(out), in_shape, node.op_type)
        self.items.append(item)
        self.value_of[out] = layer
        if len(self.items) > MAX_LAYERS:
            raise BackendError([error(f"the model has more than {MAX_LAYERS} layers", "import")])
        return item

    def alias(self, out: str, value: str, last: bool | None = None) -> None:
        """``out`` is the same layer as ``value`` (a view: a layout change, an identity)."""
        self.value_of[out] = self.value_of[value]
        if last if last is not None else value in self.last:
            self.last.add(out)
        else:
            self.last.discard(out)


_MODULE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
# the ops that compute the same on a channels-last view (element by element, LayerNormalization over its
# last axis: the channels, a Concat whose mapping checks its axis against the layout); any other op reading
# such a view is refused
_ANY_LAYOUT = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish", "Gelu", "HardSigmoid", "Add", "Mul",
               "LayerNormalization", "Concat"}


def read(path: str | Path, name: str | None = None) -> tuple[Flat, dict[str, Any]]:
    """The flat layers of the ONNX file and its weights (state_dict key -> numpy array)."""
    flat, weights, _ = _read(Path(path), name)
    return flat, weights


def _read(path: Path, name: str | None) -> tuple[Flat, dict[str, Any], set[Path]]:
    """read's layers and weights, and the external data files the model's numbers were read from (inputs,
    which no output may replace); every refusal located at the file."""
    try:
        return _walk(path, name)
    except BackendError as exc:
        where = Location(_safe(path, 1000))
        raise BackendError([d.at(where) if d.location is NOWHERE else d for d in exc.errors]) from None


def _onnx() -> Any:
    """The onnx package, or a refusal that says how to install it."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference  # noqa: F401 (both used once the model is read)
    except ImportError as exc:
        raise BackendError([error(f"reading an ONNX file needs the onnx package, which cannot be imported "
                                  f"({_safe(exc)})", "import", hint="pip install 'archcompiler[onnx]'")]) from None
    return onnx


_KINDS = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a plain file")


def _load(path: Path) -> Any:
    """The ModelProto of the file, read as data: a regular file (not a folder, a pipe or a device, which
    are never opened for reading), of at most MAX_ONNX_BYTES, whose top-level fields are a ModelProto's
    (walked with a few small reads, so that a file of zeros or garbage is refused before it is read
    whole)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _fail(path, _stat_error(path, exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, f"{_safe(path)} is a folder, not an ONNX file", hint="give the path of the .onnx file")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, f"{_safe(path)} is not a regular file: it is {_kind(st.st_mode)}",
                    hint="archc reads an ONNX model from a plain file")
    onnx = _onnx()
    try:        # O_NONBLOCK: a file swapped for a pipe since the stat is never waited on
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _fail(path, _stat_error(path, exc)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _fail(path, f"{_safe(path)} is not a regular file: it is {_kind(st.st_mode)}")
        size = st.st_size
        if size == 0:
            raise _fail(path, f"{_safe(path)} is empty, not an ONNX model")
        if size > MAX_ONNX_BYTES:
            raise _fail(path, f"{_safe(path)} is {size} bytes; at most {MAX_ONNX_BYTES} are read")
        why = _not_a_model(f, size)
        if why:
            raise _fail(path, f"{_safe(path)} is not a readable ONNX model: {why}",
                        hint="archc imports an ONNX ModelProto file (what torch.onnx.export writes)")
        f.seek(0)
        data = f.read(size + 1)
    if len(data) != size:
        raise _fail(path, f"{_safe(path)} changed while it was read ({size} bytes, then {len(data)})")
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 (a malformed file: say so, without a traceback)
        raise _fail(path, f"{_safe(path)} is not a readable ONNX model: {_safe(exc)}") from None


def _stat_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{_safe(path)} is a symbolic link that leads back to itself (a loop)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{_safe(path)} does not exist"
    return f"cannot read {_safe(path)}: {_safe(exc.strerror or exc)}"


def _varint(data: bytes, at: int) -> tuple[int | None, int]:
    """The protobuf varint at ``at`` and the offset after it; None where the bytes are not one."""
    value = 0
    for k in range(10):
        if at + k >= len(data):
            return None, at
        value |= (data[at + k] & 0x7F) << (7 * k)
        if not data[at + k] & 0x80:
            return value, at + k + 1
    return None, at


def _not_a_model(f: Any, size: int) -> str | None:
    """Why the file's top-level protobuf fields are not a ModelProto's (None where they may be): each
    field's tag a ModelProto field of its wire type (an unknown field number, which a later ONNX may
    add, of any valid one), each length within the file, and a graph among them. At most MAX_TOP_FIELDS
    are walked, a seek and a read of 20 bytes each."""
    pos, graph = 0, False
    for _ in range(MAX_TOP_FIELDS):
        if pos == size:
            return None if graph else "it holds no graph"
        f.seek(pos)
        head = f.read(20)
        tag, at = _varint(head, 0)
        field, wire = (tag >> 3, tag & 7) if tag is not None else (0, -1)
        if field == 0 or wire not in (0, 1, 2, 5) or _MODEL_FIELDS.get(field, wire) != wire:
            return (f"the bytes at offset {pos} ({head[:8].hex(' ')}) are not a field of a protobuf ModelProto"
                    if pos else f"its first bytes ({head[:8].hex(' ')}) are not a field of a protobuf ModelProto")
        if wire == 0:
            value, at = _varint(head, at)
            if value is None:
                return f"the number at offset {pos} does not end"
            end = pos + at
        elif wire == 2:
            length, at = _varint(head, at)
            if length is None:
                return f"the length at offset {pos} does not end"
            end = pos + at + length
        else:
            end = pos + at + (8 if wire == 1 else 4)
        if end > size:
            return f"field {field} at offset {pos} runs {end - size} bytes past the end of the file (it is cut short)"
        graph = graph or field == 7
        pos = end
    return None


def _walk(path: Path, name: str | None) -> tuple[Flat, dict[str, Any], set[Path]]:
    model = _load(path)
    onnx = _onnx()
    from onnx import shape_inference

    _fix_batch(model)

    try:
        model = shape_inference.infer_shapes(model)   # (the sizes read by Shape -> Gather -> Reshape: _computed)
    except Exception as exc:  # noqa: BLE001 (a malformed file: say so, without a traceback)
        raise _fail(path, f"{_safe(path)} is not a readable ONNX model: {_safe(exc)}") from None
    g = model.graph
    if len(g.node) > MAX_NODES or len(g.initializer) > MAX_NODES:
        raise BackendError([error(f"{_safe(path)} has {len(g.node)} nodes and {len(g.initializer)} initializers; "
                                  f"at most {MAX_NODES} of each are read", "import")])
    for node in g.node:        # (protobuf gives a string field that is not UTF-8 as bytes)
        if not all(isinstance(t, str) for t in (node.op_type, node.domain, node.name, *node.input, *node.output)):
            raise BackendError([error("a node's op type, domain, name or value name is not UTF-8 text", "import",
                                      hint="ONNX's strings are UTF-8")])
    external: set[Path] = set()
    budget = [MAX_ELEMENTS]
    consts = _initializers(g, path, external, budget)
    defined = set(consts) | {i.name for i in g.input}
    for node in g.node:                 # each value is written once (by an initializer, the input or one node)
        for o in node.output:
            if o in defined:
                was = "an initializer" if o in consts else "the model's input" if o in {i.name for i in g.input} \
                    else "another node"
                raise _refuse(node, f"writes {_q(o)}, which {was} already writes",
                              "in an ONNX graph each value is written once")
            if o:
                defined.add(o)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.tensor_type.HasField("shape"):       # (its rank unknown)
            continue
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(shapes.get(inputs[0].name, ())) != 4 or min(shapes[inputs[0].name][1:]) < 1:
        raise BackendError([error("the model must have one input of a fixed N x C x H x W shape", "import")])
    if max(shapes[inputs[0].name][1:]) > MAX_DIM:
        raise BackendError([error(f"the model's input {_q(inputs[0].name)} has the shape "
                                  f"{list(shapes[inputs[0].name])}: a dimension over {MAX_DIM}", "import")])
    if len(g.output) < 1:
        raise BackendError([error("the model has no output", "import")])
    readers: dict[str, list[Any]] = {}
    for node in g.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    # the shapes the nodes compute from the input's and the initializers' (the shapes the file declares for
    # computed values are not checked by ONNX's inference: one that differs is refused; one it alone gives, after
    # an op the inference has no rule for, is used but never read as a size)
    verified = {inputs[0].name, *consts}
    _computed(model, consts, shapes, verified)
    for _ in range(MAX_FOLD_ROUNDS):     # constants computed, then the shapes they make known, and again
        if not _fold(g, consts, shapes, verified, path, external, budget):
            break
        _computed(model, consts, shapes, verified)
    ctx = _Graph(consts, shapes, {inputs[0].name: "input"}, readers)
    ctx.order = list(g.node)
    nhwc = False
    ctx.producer = {o: node for node in g.node for o in node.output}
    for node in g.node:
        if id(node) in ctx.skip or node.output and all(o in consts for o in node.output):
            continue
        if not node.output or not node.output[0]:
            raise _refuse(node, "writes no value (its first output has no name)",
                          "in an ONNX graph each node writes its output under a name")
        if node.op_type == "Constant":
            attr = {a.name: a for a in node.attribute}
            if "value" not in attr:
                raise _refuse(node, "a Constant other than a tensor")
            if attr["value"].type != onnx.AttributeProto.TENSOR or not node.output:
                raise _refuse(node, "a Constant other than a tensor")
            consts[node.output[0]] = _tensor(attr["value"].t, path, external, budget,
                                             f"node {_safe(node.name) or '(unnamed)'} (Constant): its value")
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise _refuse(node, "a subgraph (control flow)", "archc writes one graph for every input")
        if node.op_type == "Transpose" and node.input and ctx.value_of.get(node.input[0]) == "input" and not nhwc \
                and [int(p) for p in _attrs(node).get("perm", [])] == [0, 3, 1, 2] and _standard(node):
            nhwc = True             # Keras's export: the file takes N x H x W x C and transposes it first
            ctx.alias(node.output[0], node.input[0])
            continue
        if (node.op_type in _PASS or _concat_of_one(node, ctx) or _same_type_cast(node)) and node.input \
                and node.input[0] in ctx.value_of:
            for out in node.output[:1]:
                ctx.alias(out, node.input[0])
            continue
        try:
            made = _lrn_step(node, consts, ctx.value_of, ctx.pending)
            if made is None:
                made = _shuffle_step(node, ctx)
        except Unmappable as exc:
            raise _refuse(node, str(exc)) from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError,
                OverflowError) as exc:       # a pattern's constants of unexpected shapes: refused, by name
            raise _refuse(node, f"unexpected attributes or inputs ({type(exc).__name__})") from None
        if made is True:
            continue
        if made is not None:             # a pattern complete (a channel shuffle or split, LRN): one layer per output
            for out, fields, src in made:
                layer = _unique("%" + out, ctx.taken)
                ctx.items.append(Item(layer, fields, [src], node.op_type, None, None, shapes.get(out, ())[1:],
                                      (), node.op_type))
                ctx.value_of[out] = layer
            continue
        try:
            if _standard(node) and any(step(node, ctx) for step in _STEPS):
                continue
        except Unmappable as exc:
            raise _refuse(node, str(exc)) from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError,
                OverflowError) as exc:       # a pattern's constants of unexpected shapes: refused, by name
            raise _refuse(node, f"unexpected attributes or inputs ({type(exc).__name__})") from None
        if node.op_type in ("Shape", "Size") and _standard(node):     # (one whose shape is fixed is a constant)
            full = shapes.get(node.input[0]) if node.input else None
            what = f"reads the shape of {_q(node.input[0] if node.input else '')}, "
            raise _refuse(node, what + (f"which is not fixed ({list(full)}: -1 is not fixed)" if full and min(full) < 0
                                        else "which only the file declares (its nodes' shapes do not give it)"
                                        if full else "which is not known"),
                          "archc reads sizes read from the shape where the model's input has a fixed N x C x H x W "
                          "shape (exported without dynamic axes)")
        _mapped(node, ctx)
    result = ctx.value_of.get(g.output[0].name)
    if result is None:
        raise BackendError([error(f"the output {_q(g.output[0].name)} is not computed by a mapped node", "import")])
    if g.output[0].name in ctx.last:
        raise BackendError([error(f"the output {_q(g.output[0].name)} is a channels-last view (no Transpose back)",
                                  "import")])
    result, _ = place(ctx.items, result, {}, lambda base: _unique(base, ctx.taken))
    size = tuple(shapes[inputs[0].name][1:])
    source = _safe(path, 1000)
    if nhwc:        # the spec takes what the file's first Transpose made: C x H x W
        size = (size[2], size[0], size[1])
        source += (" (the file takes N x H x W x C and transposes it first: the spec takes N x C x H x W, "
                   "x.permute(0, 3, 1, 2) of the file's input)")
    probes: dict[str, tuple[str, bool]] = {}
    for value, layer in ctx.value_of.items():        # (in the walk's order: a layer's last view is its output)
        item = ctx.layer(layer)
        if item is not None and item.path:
            probes[item.path] = (value, value in ctx.last)
    return Flat(name or _clean(path.stem) or "model", size, ctx.items, source, {}, result, probes=probes), \
        ctx.weights, external     # (the source: a comment line of the spec)


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


def _size(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


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
# the number types a Cast is folded to: TensorProto.DataType -> numpy's name
_CASTS = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
          11: "float64"}


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
                                                 f"node {_safe(node.name) or '(unnamed)'} (Constant): its value")
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
                raise BackendError([error(f"node {_safe(node.name) or '(unnamed)'} ({node.op_type}): the tensors hold "
                                          f"more than {MAX_ELEMENTS} numbers", "import")])
        consts[node.output[0]] = value
        shapes[node.output[0]] = value.shape
        folded = True
    return folded and any(min(shapes.get(o, (-1,)), default=0) < 0 for n in g.node for o in n.output[:1]
                          if o and o not in consts)


MAX_FOLD_ROUNDS = 64    # (each round makes known the sizes that the last one's constants decide)
MAX_GIVEN = 4096        # the constants shape inference is given whole (their values may be sizes); the rest by shape
MAX_PROPAGATED = 2 ** 16
MAX_RANK = 64           # the numbers of a shape, of axes or of a Slice's bounds that are read


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


def _folded(kind: str, attrs: dict[str, Any], ins: list[str], consts: dict[str, Any],
            shapes: dict[str, tuple[int, ...]]) -> Any:
    """The value of one node of _FOLDED (its attributes, its input names), or None where it is not computed here."""
    import numpy as np

    def ints(v: Any) -> list[int] | None:       # (sizes, axes, bounds: a few numbers)
        ok = v is not None and v.dtype.kind in "iu" and v.ndim <= 1 and v.size <= MAX_RANK
        return [int(x) for x in v.reshape(-1)] if ok else None

    def axis(a: int, rank: int) -> int:
        if not -rank <= a < rank:
            raise ValueError(f"axis {a} of a rank {rank} tensor")
        return a % rank

    if kind in ("Shape", "Size"):
        full = shapes.get(ins[0]) if len(ins) == 1 else None
        if full is None or min(full, default=0) < 0 or len(shapes.get(ins[0], ())) != len(full):
            return None
        if kind == "Size":
            return np.asarray(_size(full), dtype=np.int64)
        rank = len(full)
        start, end = int(attrs.get("start", 0)), int(attrs.get("end", rank))
        start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
        return np.asarray(full[start:end], dtype=np.int64)
    if kind == "ConstantOfShape":
        dims = ints(consts.get(ins[0])) if len(ins) == 1 else None
        t = attrs.get("value")
        fill = np.zeros(1, np.float32) if t is None else _onnx().numpy_helper.to_array(t).reshape(-1)
        if dims is None or min(dims, default=0) < 0 or fill.size != 1 or _size(tuple(dims)) > MAX_CHAIN_ELEMENTS:
            return None
        return np.full(dims, fill[0], dtype=fill.dtype)
    if not ins or any(i not in consts for i in ins if i):
        return None
    v = [consts[i] if i else None for i in ins]
    x = v[0]
    if kind == "Identity":
        return x if len(ins) == 1 else None
    if kind == "Gather":
        idx = v[1] if len(v) == 2 else None
        if idx is None or idx.dtype.kind not in "iu" or x.ndim < 1:
            return None
        ax = axis(int(attrs.get("axis", 0)), x.ndim)
        n = x.shape[ax]
        if idx.size and (idx.min() < -n or idx.max() >= n) or idx.size * (x.size // max(n, 1)) > MAX_CHAIN_ELEMENTS:
            return None
        return np.take(x, np.where(idx < 0, idx + n, idx).astype(np.int64), axis=ax)
    if kind in ("Unsqueeze", "Squeeze"):
        axes = [int(a) for a in attrs["axes"]] if "axes" in attrs else ints(v[1]) if len(v) > 1 else None
        if kind == "Unsqueeze":
            rank = x.ndim + len(axes or [])
            axes = sorted(axis(a, rank) for a in axes or [])
            if not axes or len(set(axes)) != len(axes):
                return None
            return x.reshape(_unsqueezed(x.shape, axes))
        if axes is None:
            return x.reshape([d for d in x.shape if d != 1])
        axes = sorted({axis(a, x.ndim) for a in axes})
        if any(x.shape[a] != 1 for a in axes):
            return None
        return x.reshape([d for k, d in enumerate(x.shape) if k not in axes])
    if kind == "Concat":
        if len({a.dtype for a in v}) != 1 or len({a.ndim for a in v}) != 1 or x.ndim < 1:
            return None
        return np.concatenate(v, axis=axis(int(attrs["axis"]), x.ndim))
    if kind == "Cast":
        to = _CASTS.get(int(attrs.get("to", 0)))
        if to is None or len(v) != 1 or x.dtype.kind not in "biuf":
            return None
        if np.dtype(to).kind in "iu" and x.dtype.kind == "f":
            info = np.iinfo(to)
            if not np.all(np.isfinite(x)) or x.size and (x.min() < info.min or x.max() > info.max):
                return None
        return x.astype(to)
    if kind == "Slice":
        if "starts" in attrs:           # (before opset 10: attributes)
            starts, ends = [int(a) for a in attrs["starts"]], [int(a) for a in attrs["ends"]]
            axes = [int(a) for a in attrs.get("axes", range(len(starts)))]
            steps = [1] * len(starts)
        else:
            starts, ends = ints(v[1]) if len(v) > 1 else None, ints(v[2]) if len(v) > 2 else None
            axes = ints(v[3]) if len(v) > 3 and v[3] is not None else list(range(len(starts or [])))
            steps = ints(v[4]) if len(v) > 4 and v[4] is not None else [1] * len(starts or [])
        if starts is None or ends is None or axes is None or steps is None \
                or not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
            return None
        axes = [axis(a, x.ndim) for a in axes]
        if len(set(axes)) != len(axes):
            return None
        out = x
        for a, start, end, step in zip(axes, starts, ends, steps):
            n = x.shape[a]
            if step > 0:
                lo, hi = (max(0, min(n, p + n if p < 0 else p)) for p in (start, end))
            elif n == 0:
                return None
            else:
                lo = max(0, min(n - 1, start + n if start < 0 else start))
                hi = max(-1, min(n - 1, end + n if end < 0 else end))
            out = np.take(out, np.arange(lo, hi, step, dtype=np.int64), axis=a)
        return out
    if kind == "Reshape":
        target = ints(v[1]) if len(v) == 2 else None
        if target is None or target.count(-1) > 1 or min(target, default=0) < -1:
            return None
        if not attrs.get("allowzero", 0):
            if any(t == 0 and k >= x.ndim for k, t in enumerate(target)):
                return None
            target = [x.shape[k] if t == 0 else t for k, t in enumerate(target)]
        known = _size(tuple(t for t in target if t != -1))
        if -1 in target:
            if known == 0 or x.size % known:
                return None
            target[target.index(-1)] = x.size // known
        return x.reshape(target) if _size(tuple(target)) == x.size else None
    if kind == "Transpose":
        perm = [int(p) for p in attrs.get("perm", range(x.ndim - 1, -1, -1))]
        return np.ascontiguousarray(x.transpose(perm)) if sorted(perm) == list(range(x.ndim)) else None
    if kind in ("Neg", "Sqrt"):
        if len(v) != 1 or x.dtype.kind not in "if" or kind == "Sqrt" and x.dtype.kind != "f" or x.size > MAX_GIVEN:
            return None
        with np.errstate(all="raise"):
            return -x if kind == "Neg" else np.sqrt(x)
    if kind == "Where":
        if len(v) != 3 or v[0].dtype != np.bool_ or v[1].dtype != v[2].dtype \
                or _size(np.broadcast_shapes(*(a.shape for a in v))) > MAX_CHAIN_ELEMENTS:
            return None
        return np.where(*v)
    if kind == "Expand":
        dims = ints(v[1]) if len(v) == 2 else None
        if dims is None or min(dims, default=1) < 0:
            return None
        shape = np.broadcast_shapes(x.shape, tuple(dims))
        if _size(shape) > MAX_CHAIN_ELEMENTS:
            return None
        return np.array(np.broadcast_to(x, shape))
    # element-wise on two constants of one type (ONNX broadcasts as numpy does); on numbers, only sizes and
    # scalars (a product of weights is left to the steps that read it back: Swin V2's position MLP)
    if len(v) != 2 or v[0].dtype != v[1].dtype or x.dtype.kind not in "biuf" \
            or _size(np.broadcast_shapes(x.shape, v[1].shape)) > (MAX_GIVEN if x.dtype.kind == "f" else
                                                                   MAX_CHAIN_ELEMENTS):
        return None
    a, b = v
    if kind == "Equal":
        return np.equal(a, b)
    if x.dtype.kind == "b":
        return None
    with np.errstate(all="raise"):
        if kind in ("Add", "Sub", "Mul"):
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[kind](a, b)
        if kind == "Div":
            if x.dtype.kind == "f":
                return np.divide(a, b)
            if np.any(b == 0):
                return None
            q = np.abs(a) // np.abs(b)            # integers: the quotient truncated toward zero
            return np.where((a < 0) != (b < 0), -q, q).astype(x.dtype)
        if kind == "Mod":
            if np.any(b == 0):
                return None
            if attrs.get("fmod", 0):
                return np.fmod(a, b)
            return np.mod(a, b) if x.dtype.kind in "iu" else None
    return None


def _unsqueezed(shape: tuple[int, ...], axes: list[int]) -> list[int]:
    """The shape with a 1 inserted at each of ``axes`` (positions in the output)."""
    dims = iter(shape)
    return [1 if k in axes else next(dims) for k in range(len(shape) + len(axes))]


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
                                   f"{_safe(dims, 80)}): {why}", "import", hint=hint)])
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
            raise refuse(f"its numbers cannot be read ({type(exc).__name__}: {_safe(exc, 100)})") from None
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
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"no such file beside {_safe(path.name)}" \
            if exc.errno == errno.ENOENT else f"cannot be read ({_safe(exc.strerror or exc)})"
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
             [ctx.shape(i) for i in tensor_ins], ctx.shapes.get(node.output[0], ())[1:], any(last))
    if any(last):
        s = n.shape
        n.shape = (s[2], s[0], s[1]) if len(s) == 3 else s
    try:
        fields = entry.layer(n)
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


def _only_reader(ctx: _Graph, value: str, op_type: str) -> Any:
    """The one node reading ``value``, where it is one of ``op_type``; else None."""
    r = ctx.readers.get(value, [])
    return r[0] if len(r) == 1 and r[0].op_type == op_type and _standard(r[0]) else None


def _const_of(ctx: _Graph, node: Any) -> tuple[list[str], list[tuple[int, Any]]]:
    """A node's tensor inputs (layers' outputs) and its constant inputs (position, value)."""
    tensors = [i for i in node.input if i and i not in ctx.consts]
    consts = [(k, ctx.consts[i]) for k, i in enumerate(node.input) if i and i in ctx.consts]
    return tensors, consts


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


def _sole_reader(ctx: _Graph, layer: str) -> Any:
    """The one node that reads the layer's output other than through a view of it (a layout Transpose, a
    Cast, an Identity that the walk has made the same layer); None where there are more, or none."""
    same = {v for v, name in ctx.value_of.items() if name == layer}
    others = {id(r): r for v in same for r in ctx.readers.get(v, []) if not set(r.output) & same}
    return next(iter(others.values())) if len(others) == 1 else None


def _parameter_step(node: Any, ctx: _Graph) -> bool:
    """A layer times or plus a parameter, or joined with one: a C x 1 x 1 scale times an image (ConvNeXt's
    layer scale), a 1 x S x D embedding added to a sequence (ViT's pos_embedding), a 1 x 1 x D token
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
    if kind == "Mul" and len(shape) == 3 and value_shape == (shape[0], 1, 1):
        fields = FROM_ONNX["param:Mul"].layer(node)
    elif kind == "Add" and len(shape) == 2 and value_shape == (1, *shape):
        fields = FROM_ONNX["param:Add"].layer(node)
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


# the ops torch's nn.MultiheadAttention is written as (batch_first: the sequence transposed to S x N x D and
# back; the in-projection, q, k and v split into heads, the scaled product, softmax, the product with v, the
# out-projection)
_ATTENTION_OPS = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Gather", "Mul", "Div", "MatMul", "Softmax", "Add",
                  "Gemm", "Split", "Slice"}
MAX_ATTENTION_NODES = 64


def _attention_step(node: Any, ctx: _Graph) -> bool:
    """ViT's self-attention (torch's nn.MultiheadAttention, batch_first, as the exporter writes it): from
    the Transpose 1 0 2 of a 1 x S x D sequence to the Transpose 1 0 2 back to 1 x S x D, every node in
    between one of _ATTENTION_OPS that reads only values of the pattern and constants, with one
    in-projection (a D x 3D matrix and a 3D bias), one softmax over the last axis of 1 x heads x S x S,
    the scale 1 / sqrt(D / heads) as constant factors and one out-projection (D x D and D): one
    ``self_attention`` layer."""

    if node.op_type != "Transpose" or not node.input or node.input[0] not in ctx.value_of \
            or list(_attrs(node).get("perm", [])) != [1, 0, 2]:
        return False
    src = node.input[0]
    full = ctx.shapes.get(src, ())
    if len(full) != 3 or full[0] != 1 or src in ctx.last:
        return False
    seq, dim = full[1], full[2]
    inside, region, exits = {node.output[0]}, [], []
    frontier = [node.output[0]]
    seen: set[int] = {id(node)}
    while frontier:
        value = frontier.pop()
        for r in ctx.readers.get(value, []):
            if id(r) in seen or r.output and all(o in ctx.consts for o in r.output):    # (a size read: a constant)
                continue
            seen.add(id(r))
            region.append(r)
            if len(region) > MAX_ATTENTION_NODES or r.op_type not in _ATTENTION_OPS or not _standard(r):
                return False
            if r.op_type == "Transpose" and list(_attrs(r).get("perm", [])) == [1, 0, 2] \
                    and ctx.shapes.get(r.output[0]) == (1, seq, dim):
                exits.append(r)
                continue
            inside.update(r.output)
            frontier.extend(r.output)
    if len(exits) != 1 or any(i and i not in inside and i not in ctx.consts for r in region for i in r.input):
        return False

    def weight(r: Any) -> tuple[str, Any] | None:
        consts = [(i, ctx.consts[i]) for i in r.input[1:2] if i in ctx.consts]
        return consts[0] if consts and getattr(consts[0][1], "ndim", 0) == 2 else None

    products = [(r, weight(r)) for r in region if r.op_type in ("MatMul", "Gemm") and weight(r) is not None]
    softmax = [r for r in region if r.op_type == "Softmax"]
    if len(products) != 2 or len(softmax) != 1 or _attrs(softmax[0]).get("axis", -1) not in (-1, 3):
        return False
    scores = ctx.shapes.get(softmax[0].output[0], ())
    if len(scores) != 4 or scores[0] != 1 or scores[2:] != (seq, seq) or dim % scores[1]:
        return False
    heads = scores[1]
    params: dict[str, tuple[str, Any]] = {}
    for r, (init, w) in products:
        gemm = r.op_type == "Gemm"
        a = _attrs(r)
        if gemm and (a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0)):
            return False
        w = w if gemm and a.get("transB", 0) else w.T          # torch's layout: out x in
        names = {(3 * dim, dim): ("in_proj_weight", "in_proj_bias"), (dim, dim): ("out_proj.weight", "out_proj.bias")}
        if w.shape not in names or names[w.shape][0] in params:
            return False
        bias = (r.input[2], ctx.consts.get(r.input[2])) if gemm and len(r.input) > 2 and r.input[2] else None
        add = _only_reader(ctx, r.output[0], "Add") if not gemm else None
        if add is not None:
            bias = next(((i, ctx.consts[i]) for i in add.input if i in ctx.consts), None)
        elif (len(r.input) < 3 or not r.input[2]) if gemm else \
                not any(a.op_type == "Add" for a in ctx.readers.get(r.output[0], [])):
            import numpy as np  # no bias (the exporter drops a zero one): zeros

            bias = ("", np.zeros(w.shape[0], dtype=w.dtype))
        if bias is None or bias[1] is None or tuple(bias[1].shape) != (w.shape[0],):
            return False
        params[names[w.shape][0]], params[names[w.shape][1]] = (init, w), bias
    if len(params) != 4:
        return False
    scale = 1.0
    for r in region:
        for i in r.input[1:] if r.op_type == "Div" else r.input:
            v = ctx.consts.get(i) if r.op_type in ("Mul", "Div") else None
            if v is not None and getattr(v, "size", 0) == 1:
                scale *= float(v.reshape(-1)[0]) ** (-1 if r.op_type == "Div" else 1)
    if abs(scale * (dim // heads) ** 0.5 - 1) > 1e-5:
        return False
    for r in region:
        ctx.skip.add(id(r))
    ctx.skip.discard(id(node))
    order = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    ctx.emit(exits[0], exits[0].output[0], FROM_ONNX["pattern:attention"].layer(Node(exits[0].name, {"heads": heads},
                                                                                     [], [], ())), [ctx.value_of[src]],
             {k: params[k] for k in order}, ctx.shape(src))
    return True


def _slice(ctx: _Graph, node: Any) -> tuple[int, int, int, int] | None:
    """(axis, start, end, step) of a Slice along one axis with constant bounds, clipped to the input's size."""
    ins = [*node.input, "", "", ""][:5]
    starts, ends, axes, steps = (ctx.consts.get(i) if i else None for i in ins[1:5])
    full = ctx.shapes.get(ins[0], ())
    if node.op_type != "Slice" or starts is None or ends is None or starts.size != 1 or not full:
        return None
    axis = int(axes.reshape(-1)[0]) % len(full) if axes is not None else 0
    step = int(steps.reshape(-1)[0]) if steps is not None else 1
    size = full[axis]

    def clip(v: int) -> int:
        return max(0, min(size, v + size if v < 0 else v))
    return (axis, clip(int(starts.reshape(-1)[0])), clip(int(ends.reshape(-1)[0])), step) if step > 0 else None


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


MAX_CHAIN_ELEMENTS = 2 ** 22       # the positions a reshape chain is checked on (a 32 MB index)


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
    import numpy as np

    if node.op_type not in ("Reshape", "Slice", "Pad") or not node.input or node.input[0] not in ctx.last:
        return False
    src = node.input[0]
    full = ctx.shapes.get(src, ())
    if len(full) != 4 or full[0] != 1:
        return False
    _, height, width, c = full
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
                return False
            inside.update(r.output)
            frontier.extend(r.output)
    outside = [v for v in outside if v != src]      # the view itself may be read elsewhere too (a residual)
    if len(set(outside)) != 1 or ctx.shapes.get(outside[0]) != full:
        return False
    softmax = [r for r in region if r.op_type == "Softmax"]
    scores = ctx.shapes.get(softmax[0].output[0], ()) if len(softmax) == 1 else ()
    window = int(round(scores[-1] ** 0.5)) if len(scores) == 4 else 0
    if not window or window * window != scores[-1] or scores[-2] != scores[-1] \
            or _attrs(softmax[0]).get("axis", -1) not in (-1, 3) or c % scores[1]:
        return False
    heads, n = scores[1], scores[-1]
    ph, pw = -(-height // window) * window, -(-width // window) * window
    cosine = any(r.op_type == "ReduceL2" for r in region)
    # the position bias: a constant (Swin, MaxViT) or the position MLP's steps (V2), added to the scores
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
                    return False
                extra["relative_position_bias_table"] = (i, table)
            elif v is None and cosine and not bias_nodes:
                found = _cpb_branch(ctx, i, window, heads)
                if found is None:
                    return False
                bias_nodes, extra = found
            elif v is None or v.ndim > 1:
                return False
    if (not bias_nodes if cosine else table is None) or len(masks) > 1:
        return False
    region_inputs = inside | {o for b in bias_nodes for o in b.output}
    if any(i and i not in region_inputs and i not in ctx.consts for r in region for i in r.input):
        return False
    # the projections, and which of q and k the scale multiplies (Swin: q, MaxViT: k)
    scaled = [(r, i) for r in region if r.op_type == "Mul" for i in r.input if i in ctx.consts]
    scales = [(r, ctx.consts[i]) for r, i in scaled]
    maxvit = False
    if cosine:
        logit = [v for _, v in scales if v.shape == (heads, 1, 1)]
        clips = [r for r in region if r.op_type == "Clip"]
        if len(logit) != 1 or len(scales) != 1 or len(clips) != 2 or np.any(logit[0] <= 0) or any(
                _clip_floor(ctx, r) != 1e-12 for r in clips):
            return False
        extra["logit_scale"] = ("", np.log(logit[0]).astype(logit[0].dtype))
    else:
        if len(scales) != 1 or scales[0][1].size != 1:
            return False
        which = next((ctx.producer.get(i) for i in scales[0][0].input if i in inside), None)
        picked = ctx.consts.get(which.input[1]) if which is not None and which.op_type == "Gather" else None
        if picked is None or picked.size != 1 or int(picked) not in (0, 1):
            return False
        maxvit = int(picked) == 1
        expected = c ** -0.5 if maxvit else (c // heads) ** -0.5
        if abs(float(scales[0][1].reshape(-1)[0]) / expected - 1) > 1e-5:
            return False
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
            return False
        params[name + ".weight"], params[name + ".bias"] = (r.input[1], w.T), bias
    if len(params) != 4 or cosine and np.any(params["qkv.bias"][1][c:2 * c] != 0):
        return False
    grid = _partition(ctx, region, window, ph, pw)
    if grid is None:
        return False
    shift = _shift(ctx, region, window, ph, pw, masks)
    if shift is None:
        return False
    ctx.skip.update(id(r) for r in [*region, *bias_nodes])
    ctx.skip.discard(id(node))
    found: dict[str, Any] = {"heads": heads, "window": window}
    if maxvit:
        found.update(({"grid": True} if grid else {}), layout="maxvit")
        if (ph, pw) != (height, width):
            found["pad"] = True
    else:
        found.update(shift=shift, pad=True, **({"cosine": True} if cosine else {}))
    fields = FROM_ONNX["pattern:windows"].layer(Node(outside[0], found, [], [], ()))
    index = _relative_index(window)
    out = outside[0]
    ctx.last.add(out)
    producer = ctx.producer[out]
    ctx.emit(producer, out, fields, [ctx.value_of[src]],
             {**extra, "relative_position_index": ("", (index if maxvit else index.reshape(-1)).astype(np.int64)),
              **params}, ctx.shape(src))
    return True


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


def _groups_step(node: Any, ctx: _Graph) -> bool:
    """A norm over groups of channels as the exporters write torch's nn.GroupNorm before opset 21: a Reshape
    of an image to N x G x (C / G * H * W), InstanceNormalization (scale 1, bias 0), a Reshape back (to a
    constant shape, or to the Shape of the image: the TorchScript exporter's), a Mul by a C x 1 x 1 scale
    and an Add of a C x 1 x 1 shift, each the only reader of the one before: one layer of
    ``FROM_ONNX["pattern:instance_norm_groups"]``, the scale and shift its weight and bias. The nodes are
    taken at the first Reshape (or at the Shape, where that comes first) and the layer is made at the Add,
    once the Constant nodes the TorchScript exporter writes between them have been read; archc reads no
    InstanceNormalization otherwise, so constants that do not fit are refused there, saying which."""
    from types import SimpleNamespace

    import numpy as np

    state = ctx.pending.get(node.output[0]) if node.op_type == "Add" and node.output else None
    if state is not None and state[0] == "instance_norm_groups":
        del ctx.pending[node.output[0]]
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
        return True
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


def _scalar(ctx: _Graph, value: str) -> float | None:
    """The number a one-element constant holds (None for anything else)."""
    v = ctx.consts.get(value)
    return float(v.reshape(-1)[0]) if v is not None and getattr(v, "size", 0) == 1 and v.dtype.kind == "f" else None


def _other(node: Any, value: str) -> str | None:
    """A two-input node's input that is not ``value`` (None where both or neither are)."""
    ins = list(node.input)
    return ins[1 - ins.index(value)] if len(ins) == 2 and ins.count(value) == 1 else None


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


# (the constant step last: a number in a pattern, GELU's 0.5 or attention's scale, is the pattern's)
_STEPS: list[Callable[[Any, _Graph], bool]] = [_layout_step, _linear_step, _bias_step, _parameter_step, _view_step,
                                               _attention_step, _merge_step, _window_step,
                                               _groups_step, _gelu_step, _norm_step, _mean_step, _pad_step,
                                               _constant_step]


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_")


class _Taken(set):
    """The names taken, and for each base _unique was asked for, the number it got to: names are only
    added, so the numbers below it are still taken (20,000 layers named conv, conv_1, ... in linear time,
    not a minute of rescanning)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}


def _unique(base: str, taken: set[str]) -> str:
    k = getattr(taken, "counts", {}).get(base, 0)
    out = f"{base}_{k}" if k else base
    while out in taken:
        k += 1
        out = f"{base}_{k}"
    if isinstance(taken, _Taken):
        taken.counts[base] = k
    taken.add(out)
    return out


def import_onnx(path: str | Path, output: str | None, weights: str | None = None, name: str | None = None,
                schema: str = "archc.schema.json", blocks: bool = True, write_spec: bool = False,
                verify: bool = True, notes: list[str] | None = None) -> str:
    """The spec text of the ONNX file; its weights written as safetensors beside ``output`` (or to
    ``weights``) when there is somewhere to write them, and with ``write_spec`` the spec to ``output``.
    Every output is checked before anything is written (not an input: the model, its external data
    files; not one another; not a folder), and each is written atomically: a refused import leaves no
    file behind. With ``verify``, the spec is built with the weights and compared with onnxruntime running
    the file (where installed): blocks and tables that compute anything else fall back to one layer per line,
    and a spec that still differs is refused; what was found goes to ``notes``."""
    import copy

    from ..spec import load_spec
    from .structure import spec_text
    from .verify import check_onnx

    path = Path(path)
    target = weights or (str(Path(output).with_suffix(".safetensors")) if output else None)
    outputs = [*([("-o", output)] if write_spec and output else []), *([("--weights", target)] if target else [])]
    check_outputs(outputs, {path: "the model"})
    flat, state, external = _read(path, name)
    check_outputs(outputs, {path: "the model", **{f: "the model's external data" for f in sorted(external)}})
    pristine = copy.deepcopy(flat) if blocks and verify else flat     # (writing blocks reshapes what it is given)
    text = spec_text(flat, schema=schema, blocks=blocks)
    try:
        load_spec(text)
    except ArchcError as exc:       # a value the mappings let through that no spec holds: refused at the file
        d = exc.errors[0]
        where = f"{_safe(d.path)}: " if d.path else ""
        raise _fail(path, f"the spec read from {_safe(path)} does not load: {where}{_safe(d.message)}") from None
    if verify:
        verdict = check_onnx(path, text, state, flat.probes)
        if verdict.checked and not verdict.ok and blocks:
            flat_text = spec_text(pristine, schema=schema, blocks=False)
            flat_verdict = check_onnx(path, flat_text, state, flat.probes)
            if flat_verdict.ok:
                text, verdict = flat_text, flat_verdict
                (notes if notes is not None else []).append("the spec with blocks and tables computed something "
                                                            "else; wrote one layer per line instead, which is exact")
        if not verdict.ok:
            raise _fail(path, f"{_safe(path)}: {verdict.describe()}",
                        hint="this is a bug in archc's import; please report it with the file")
        if notes is not None:
            notes.append(verdict.describe())
    if target:
        text = text.replace("# check, draw and build read it;",
                            f"# check, draw and build read it (weights: --weights {_safe(Path(target).name)});", 1)
    _write({**({output: text.encode("utf-8")} if write_spec and output else {}),
            **({target: _weights_bytes(state, Path(target))} if target else {})})
    return text


def _same(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same file now (a hard link, a symbolic link), or the same
    place once resolved (without failing on a symbolic link loop)."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass
    return os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b))


def check_outputs(outputs: list[tuple[str, str]], inputs: dict[Path, str]) -> None:
    """Refuse, before anything is written, outputs ((option, path)) that name an input (path -> what it
    is), one another, a folder, or a symbolic link loop."""
    def refuse(out: str, message: str, hint: str) -> BackendError:
        return BackendError([error(message, "output", Location(_safe(out, 1000)), hint=hint)])
    for k, (option, out) in enumerate(outputs):
        for src, what in inputs.items():
            if _same(out, src):
                raise refuse(out, f"{option} {_safe(out)} is {what} ({_safe(src)}), an input of this command; "
                                  "archc will not write over it", f"choose another {option} name")
        for other_option, other in outputs[:k]:
            if _same(out, other):
                raise refuse(out, f"{other_option} and {option} both name {_safe(out)}: the spec and the weights "
                                  "would be written over one another", "give --weights another file name")
        if os.path.isdir(out):
            raise refuse(out, f"{option} {_safe(out)} is a folder", f"give a file name, e.g. {option} "
                                                                    f"{_safe(Path(out) / 'net')}")
        try:
            os.stat(out)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refuse(out, f"{option} {_safe(out)} is a symbolic link that leads back to itself (a loop)",
                             "remove the link or choose another name") from None


def _weights_bytes(state: dict[str, Any], target: Path) -> bytes:
    from safetensors.numpy import save

    try:
        return save(state, metadata={"archc": "imported from ONNX"})
    except Exception as exc:  # noqa: BLE001 (a number type safetensors cannot hold: said, not a traceback)
        raise BackendError([error(f"the weights cannot be written as safetensors: {_safe(exc)}", "--weights",
                                  Location(_safe(target, 1000)))]) from None


def _write(files: dict[str, bytes]) -> None:
    """Write the files together: a temporary file beside each is made (which checks each folder can be
    written) before any is filled, and each then replaces its file, the last given first; one refused,
    none is written (but for a replace that fails after another's)."""
    from contextlib import ExitStack

    from ..io import atomic_path

    with ExitStack() as stack:
        temporaries = [(p, stack.enter_context(atomic_path(p)), data) for p, data in files.items()]
        for p, tmp, data in temporaries:
            try:
                tmp.write_bytes(data)
            except OSError as exc:
                raise BackendError([error(f"cannot write {_safe(p)}: {_safe(exc.strerror or exc)}", "output",
                                          Location(_safe(p, 1000)))]) from None


def save_weights(state: dict[str, Any], target: str | Path) -> Path:
    from ..io import write_bytes

    return write_bytes(target, _weights_bytes(state, Path(target)))
