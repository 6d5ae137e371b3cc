"""From ONNX: a model file read as data becomes a spec and a weights file.

Nothing in the file runs: the graph is read with the onnx package's protobuf parser and its shape
inference (:mod:`.files`), constants and static sizes are computed (:mod:`.fold`, :mod:`.values`), each node
maps through ``FROM_ONNX`` (the op modules' ``from_onnx``) or a pattern step (:mod:`.steps`, :mod:`.attention`,
:mod:`.windows`, :mod:`.reshapes`, :mod:`.layouts`), and the initializers are written as a safetensors file
whose keys are the spec's module paths (``archc build SPEC --weights FILE`` loads it). The file is bounded like every untrusted input: its size, its node and
initializer counts, every dimension; subgraphs (If, Loop) are refused. A node that does not map is refused
with its name, its op type and the closest op type archc reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import NOWHERE, ArchcError, BackendError, Location, error
from ...ops import Unmappable
from ...spec.limits import MAX_DIM
from ..flat import Flat, Item, place
from .attention import _attention_step
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
from .graph import _PASS, _clean, _fail, _Graph, _q, _refuse, _standard, _unique, safe_text
from .layouts import _branches_step, _grn_step, _stack_step, _tokens_step
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
from .windows import _window_step


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
        where = Location(safe_text(path, 1000))
        raise BackendError([d.at(where) if d.location is NOWHERE else d for d in exc.errors]) from None


def _walk(path: Path, name: str | None) -> tuple[Flat, dict[str, Any], set[Path]]:
    """read's work: the file checked and its constants computed (_checked_model, _folded_graph), then each node
    in the file's order read into layers (_walk_node) and the layers placed (_flat)."""
    model = _checked_model(path)
    g = model.graph
    external: set[Path] = set()
    budget = [MAX_ELEMENTS]
    consts = _initializers(g, path, external, budget)
    _check_written_once(g, consts)
    shapes = _declared_shapes(g)
    input_name = _the_input(g, consts, shapes)
    ctx = _folded_graph(model, consts, shapes, input_name, (path, external, budget))
    nhwc = False

    def tensor(t: Any, what: str) -> Any:
        return _tensor(t, path, external, budget, what)
    for node in g.node:
        nhwc = _walk_node(node, ctx, tensor, nhwc)
    return _flat(path, name, g, ctx, input_name, nhwc), ctx.weights, external


def _checked_model(path: Path) -> Any:
    """The model of the file with ONNX's shape inference run (a fixed batch first): refused where it is
    malformed, has more than MAX_NODES nodes or initializers, or a node's strings are not UTF-8 text."""
    model = _load(path)
    _onnx()
    from onnx import shape_inference

    _fix_batch(model)

    try:
        model = shape_inference.infer_shapes(model)   # (the sizes read by Shape -> Gather -> Reshape: _computed)
    except Exception as exc:  # noqa: BLE001 (a malformed file: say so, without a traceback)
        raise _fail(path, f"{safe_text(path)} is not a readable ONNX model: {safe_text(exc)}") from None
    g = model.graph
    if len(g.node) > MAX_NODES or len(g.initializer) > MAX_NODES:
        raise BackendError([error(f"{safe_text(path)} has {len(g.node)} nodes and {len(g.initializer)} initializers; "
                                  f"at most {MAX_NODES} of each are read", "import")])
    for node in g.node:        # (protobuf gives a string field that is not UTF-8 as bytes)
        if not all(isinstance(t, str) for t in (node.op_type, node.domain, node.name, *node.input, *node.output)):
            raise BackendError([error("a node's op type, domain, name or value name is not UTF-8 text", "import",
                                      hint="ONNX's strings are UTF-8")])
    return model


def _check_written_once(g: Any, consts: dict[str, Any]) -> None:
    """Refuse a value written twice (each is written once: by an initializer, the input or one node)."""
    defined = set(consts) | {i.name for i in g.input}
    for node in g.node:
        for o in node.output:
            if o in defined:
                was = "an initializer" if o in consts else "the model's input" if o in {i.name for i in g.input} \
                    else "another node"
                raise _refuse(node, f"writes {_q(o)}, which {was} already writes",
                              "in an ONNX graph each value is written once")
            if o:
                defined.add(o)


def _declared_shapes(g: Any) -> dict[str, tuple[int, ...]]:
    """The shapes the file (and ONNX's inference) gives its input, values and outputs; -1 where a size is not
    fixed; a value of unknown rank is left out."""
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.tensor_type.HasField("shape"):       # (its rank unknown)
            continue
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    return shapes


def _the_input(g: Any, consts: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> str:
    """The name of the model's one input, refused unless it is N x C x H x W of fixed sizes within MAX_DIM and
    the model has an output."""
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(shapes.get(inputs[0].name, ())) != 4 or min(shapes[inputs[0].name][1:]) < 1:
        raise BackendError([error("the model must have one input of a fixed N x C x H x W shape", "import")])
    if max(shapes[inputs[0].name][1:]) > MAX_DIM:
        raise BackendError([error(f"the model's input {_q(inputs[0].name)} has the shape "
                                  f"{list(shapes[inputs[0].name])}: a dimension over {MAX_DIM}", "import")])
    if len(g.output) < 1:
        raise BackendError([error("the model has no output", "import")])
    return inputs[0].name


def _folded_graph(model: Any, consts: dict[str, Any], shapes: dict[str, tuple[int, ...]], input_name: str,
                  files: tuple[Path, set[Path], list[int]]) -> _Graph:
    """The walk's state, once the shapes the nodes compute from the input's and the initializers' are known and
    the constants they compute are folded (in rounds: each round's constants may make more shapes known).
    ``files``: the path, the external data files read and the numbers left to read (for _fold's tensors).
    The shapes the file declares for computed values are not checked by ONNX's inference: one that differs is
    refused; one it alone gives, after an op the inference has no rule for, is used but never read as a size."""
    g = model.graph
    readers: dict[str, list[Any]] = {}
    for node in g.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    verified = {input_name, *consts}
    _computed(model, consts, shapes, verified)
    for _ in range(MAX_FOLD_ROUNDS):     # constants computed, then the shapes they make known, and again
        if not _fold(g, consts, shapes, verified, *files):
            break
        _computed(model, consts, shapes, verified)
    ctx = _Graph(consts, shapes, {input_name: "input"}, readers)
    ctx.order = list(g.node)
    ctx.opset = max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    ctx.producer = {o: node for node in g.node for o in node.output}
    return ctx


def _walk_node(node: Any, ctx: _Graph, tensor: Callable[[Any, str], Any], nhwc: bool) -> bool:
    """Read one node into ``ctx``: a constant, a pass-through, a step of a pattern, or a mapped op; refused by
    name where none. ``tensor`` reads a Constant's value; ``nhwc``: whether the file's input was found
    channels-last (Keras's first Transpose), returned as it is after this node."""
    onnx = _onnx()
    if id(node) in ctx.skip or node.output and all(o in ctx.consts for o in node.output):
        return nhwc
    if not node.output or not node.output[0]:
        raise _refuse(node, "writes no value (its first output has no name)",
                      "in an ONNX graph each node writes its output under a name")
    if node.op_type == "Constant":
        attr = {a.name: a for a in node.attribute}
        if "value" not in attr:
            raise _refuse(node, "a Constant other than a tensor")
        if attr["value"].type != onnx.AttributeProto.TENSOR or not node.output:
            raise _refuse(node, "a Constant other than a tensor")
        ctx.consts[node.output[0]] = tensor(attr["value"].t,
                                            f"node {safe_text(node.name) or '(unnamed)'} (Constant): its value")
        return nhwc
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        raise _refuse(node, "a subgraph (control flow)", "archc writes one graph for every input")
    if node.op_type == "Transpose" and node.input and ctx.value_of.get(node.input[0]) == "input" and not nhwc \
            and [int(p) for p in _attrs(node).get("perm", [])] == [0, 3, 1, 2] and _standard(node):
        ctx.alias(node.output[0], node.input[0])   # Keras's export: the file takes N x H x W x C, transposes it first
        return True
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] \
            and not (node.input[2] in ctx.consts and not ctx.consts[node.input[2]].any()):
        raise _refuse(node, "a Dropout in training mode (its training_mode input is not a constant false): it "
                            "zeroes values at random", "archc reads a Dropout in inference: its input")
    if (node.op_type in _PASS or _concat_of_one(node, ctx) or _same_type_cast(node)) and node.input \
            and node.input[0] in ctx.value_of:
        for out in node.output[:1]:
            ctx.alias(out, node.input[0])
        return nhwc
    if not _pattern_step(node, ctx):
        _refuse_shape_read(node, ctx.shapes)
        _mapped(node, ctx)
    return nhwc


def _by_name(node: Any, attempt: Callable[[], Any]) -> Any:
    """``attempt()``, what it cannot read refused by the node's name: an op's own refusal (Unmappable), or a
    pattern's constants of unexpected shapes."""
    try:
        return attempt()
    except Unmappable as exc:
        raise _refuse(node, str(exc)) from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError,
            OverflowError) as exc:
        raise _refuse(node, f"unexpected attributes or inputs ({type(exc).__name__})") from None


def _pattern_step(node: Any, ctx: _Graph) -> bool:
    """True where the node is a step of a pattern: LRN's or a channel shuffle's (whose finished layers, one per
    output, are added here), or one of _STEPS."""
    def lrn_or_shuffle() -> Any:
        made = _lrn_step(node, ctx.consts, ctx.value_of, ctx.pending)
        return made if made is not None else _shuffle_step(node, ctx)
    made = _by_name(node, lrn_or_shuffle)
    if made is True:
        return True
    if made is not None:             # a pattern complete (a channel shuffle or split, LRN): one layer per output
        for out, fields, src in made:
            layer = _unique("%" + out, ctx.taken)
            ctx.items.append(Item(layer, fields, [src], node.op_type, None, None, ctx.shapes.get(out, ())[1:],
                                  (), node.op_type))
            ctx.value_of[out] = layer
        return True
    return bool(_by_name(node, lambda: _standard(node) and any(step(node, ctx) for step in _STEPS)))


def _refuse_shape_read(node: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a Shape or Size left after folding (one whose shape is fixed is a constant), saying why its
    input's shape is not fixed."""
    if node.op_type in ("Shape", "Size") and _standard(node):
        full = shapes.get(node.input[0]) if node.input else None
        what = f"reads the shape of {_q(node.input[0] if node.input else '')}, "
        raise _refuse(node, what + (f"which is not fixed ({list(full)}: -1 is not fixed)" if full and min(full) < 0
                                    else "which only the file declares (its nodes' shapes do not give it)"
                                    if full else "which is not known"),
                      "archc reads sizes read from the shape where the model's input has a fixed N x C x H x W "
                      "shape (exported without dynamic axes)")


def _flat(path: Path, name: str | None, g: Any, ctx: _Graph, input_name: str, nhwc: bool) -> Flat:
    """The walk's layers placed as a Flat, its result the file's first output (refused where no mapped node
    computes it, or it is a channels-last view), its input size C x H x W and a probe per layer path."""
    result = ctx.value_of.get(g.output[0].name)
    if result is None:
        raise BackendError([error(f"the output {_q(g.output[0].name)} is not computed by a mapped node", "import")])
    if g.output[0].name in ctx.last:
        raise BackendError([error(f"the output {_q(g.output[0].name)} is a channels-last view (no Transpose back)",
                                  "import")])
    result, _ = place(ctx.items, result, {}, lambda base: _unique(base, ctx.taken))
    size = tuple(ctx.shapes[input_name][1:])
    text = safe_text(path, 1000)
    if nhwc:        # the spec takes what the file's first Transpose made: C x H x W
        size = (size[2], size[0], size[1])
        text += (" (the file takes N x H x W x C and transposes it first: the spec takes N x C x H x W, "
                 "x.permute(0, 3, 1, 2) of the file's input)")
    probes: dict[str, tuple[str, bool]] = {}
    for value, layer in ctx.value_of.items():        # (in the walk's order: a layer's last view is its output)
        item = ctx.layer(layer)
        if item is not None and item.path:
            probes[item.path] = (value, value in ctx.last)
    return Flat(name or _clean(path.stem) or "model", size, ctx.items, text, {}, result, probes=probes)


# (the constant step last: a number in a pattern, GELU's 0.5 or attention's scale, is the pattern's)
_STEPS: list[Callable[[Any, _Graph], bool]] = [_layout_step, _linear_step, _bias_step, _parameter_step, _view_step,
                                               _attention_step, _merge_step, _window_step,
                                               _groups_step, _stack_step, _branches_step, _tokens_step, _grn_step,
                                               _gelu_step, _norm_step, _mean_step, _pad_step, _constant_step]


@dataclass(frozen=True)
class Outputs:
    """The files import_onnx writes: the weights (safetensors) to ``weights``, by default beside ``spec`` with
    the suffix .safetensors, and, with ``write_spec``, the spec to ``spec``."""

    spec: str | None = None
    weights: str | None = None
    write_spec: bool = False


def import_onnx(path: str | Path, output: Outputs | str | None, name: str | None = None,
                schema: str = "archc.schema.json", blocks: bool = True, verify: bool = True,
                notes: list[str] | None = None) -> str:
    """The spec text of the ONNX file; the files of ``output`` written (a path alone: the spec's, whose weights
    are written beside it, the spec not written). Every output is checked before anything is written (not an
    input: the model, its external data files; not one another; not a folder), and each is written atomically:
    a refused import leaves no file behind. With ``verify``, the spec is built with the weights and compared with onnxruntime running
    the file (where installed): blocks and tables that compute anything else fall back to one layer per line,
    and a spec that still differs is refused; what was found goes to ``notes``."""
    import copy

    from ...spec import load_spec
    from ..structure import spec_text
    from ..verify import check_onnx

    path = Path(path)
    files = output if isinstance(output, Outputs) else Outputs(output)
    output, write_spec = files.spec, files.write_spec
    target = files.weights or (str(Path(output).with_suffix(".safetensors")) if output else None)
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
        where = f"{safe_text(d.path)}: " if d.path else ""
        raise _fail(path, f"the spec read from {safe_text(path)} does not load: {where}{safe_text(d.message)}") from None
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
            raise _fail(path, f"{safe_text(path)}: {verdict.describe()}",
                        hint="this is a bug in archc's import; please report it with the file")
        if notes is not None:
            notes.append(verdict.describe())
    if target:
        text = text.replace("# check, draw and build read it;",
                            f"# check, draw and build read it (weights: --weights {safe_text(Path(target).name)});", 1)
    _write({**({output: text.encode("utf-8")} if write_spec and output else {}),
            **({target: _weights_bytes(state, Path(target))} if target else {})})
    return text
