"""From ONNX: a model file read as data becomes a spec and a weights file.

Nothing in the file runs: the graph is read with the onnx package's protobuf parser and its shape
inference (:mod:`.files`), constants and static sizes are computed (:mod:`.fold`), each node maps through
``FROM_ONNX`` (the op modules' ``from_onnx``) or a pattern step (:mod:`.steps`, :mod:`.attention`), and the
initializers are written as a safetensors file whose keys are the spec's module paths (``archc build SPEC
--weights FILE`` loads it). The file is bounded like every untrusted input: its size, its node and
initializer counts, every dimension; subgraphs (If, Loop) are refused. A node that does not map is refused
with its name, its op type and the closest op type archc reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import NOWHERE, ArchcError, BackendError, Location, error
from ...ops import Unmappable
from ...spec.limits import MAX_DIM
from ..flat import Flat, Item, place
from .attention import _attention_step, _window_step
from .files import MAX_ELEMENTS, MAX_NODES, _load, _onnx, _weights_bytes, _write, check_outputs
from .fold import (
    MAX_FOLD_ROUNDS,
    _attrs,
    _computed,
    _concat_of_one,
    _fix_batch,
    _fold,
    _initializers,
    _same_type_cast,
    _tensor,
)
from .graph import _PASS, _clean, _fail, _Graph, _q, _refuse, _safe, _standard, _unique
from .reshapes import _groups_step, _merge_step, _shuffle_step
from .steps import (
    _bias_step,
    _constant_step,
    _gelu_step,
    _layout_step,
    _linear_step,
    _lrn_step,
    _mapped,
    _mean_step,
    _norm_step,
    _pad_step,
    _parameter_step,
    _view_step,
)


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


# (the constant step last: a number in a pattern, GELU's 0.5 or attention's scale, is the pattern's)
_STEPS: list[Callable[[Any, _Graph], bool]] = [_layout_step, _linear_step, _bias_step, _parameter_step, _view_step,
                                               _attention_step, _merge_step, _window_step,
                                               _groups_step, _gelu_step, _norm_step, _mean_step, _pad_step,
                                               _constant_step]


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

    from ...spec import load_spec
    from ..structure import spec_text
    from ..verify import check_onnx

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
