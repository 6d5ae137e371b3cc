"""What an op module declares, and the helpers op modules share.

An op module (``archcompiler/ops/conv.py``, or a plugin's module) defines ``OP``, an :class:`Op`:

- ``layers``: the spec ops it adds, each a :class:`LayerOp`: the pydantic model of its YAML fields
  (its ``op`` field a ``Literal`` of the names a spec writes; its docstring and field descriptions
  are what ``archc ops``, ``archc schema`` and the README's op table show) and its lowering, the
  primitive ops ``(name suffix, IR kind, attrs)`` the layer becomes;
- ``kinds``: the IR ops it defines, each an :class:`OpDef`: every fact a pass or backend uses about
  it (shape, parameters, MACs, element operations, window, memory, latency class, evaluation
  behaviour, fusion), its torch code (:class:`TorchCode`) and its drawing style (:class:`Style`);
- ``from_torch`` / ``from_onnx``: the torch calls (by module class name, ``fn:NAME``, ``method:NAME``,
  ``param:OP`` for an op with a parameter of the traced module, ``pattern:NAME`` for a pattern the
  importer recognises) and the ONNX op types (or ``pattern:NAME``) that mean it, for ``archc import``.

Nothing here imports torch: torch code is text the backend writes into the generated module, and a
class it needs is named by its module path (``"archcompiler.backends.torch.runtime:WindowAttention"``,
``"gem_pool.torch:GeM"``). The categorical facts are checked when the module is imported, so a typo
fails there and not in a user's run.

Shapes are per sample: ``(C, H, W)`` for images, ``(S, D)`` for a sequence of S tokens of D features,
``(F,)`` after flattening. Cost convention: one multiply-add = 1 MAC; FLOPs = 2 x MACs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..util import shape_text
from ._windows import out_size, pad_call, same_pads  # noqa: F401  (the op modules' helpers, re-exported)

Shape = tuple[int, ...]
Attrs = dict[str, Any]
Prim = tuple[str, str, dict[str, Any]]       # (name suffix or "", IR kind, attrs)


def _check(what: str, values: tuple, allowed: Any) -> None:
    words = set(get_args(allowed))
    bad = [v for v in values if v not in words]
    if bad:
        raise TypeError(f"{what} {bad[0]!r} is not one of {', '.join(sorted(words))}")


class ShapeError(ValueError):
    """An op cannot take the shapes it is given; the message lists them."""


class TooSmall(ShapeError):
    """A window (conv, pooling) would leave no output: the map reaching it is too small, most
    often because the network's input is (shape inference then looks for the smallest that works)."""


class Unmappable(ValueError):
    """A torch call or ONNX node of a known kind whose arguments archc has no op for (the message says which)."""


def need(ok: bool, why: str) -> None:
    """In a ``from_torch`` / ``from_onnx`` mapping: refuse what archc cannot express, saying why."""
    if not ok:
        raise Unmappable(why)


def axis1_slice(index: Any, size: int, what: str) -> tuple[int, int]:
    """The bounds of ``x[:, a:b]`` (also ``x[:, a:b, :]``, ``x[:, a:b, ...]``) along axis 1 of ``size``
    entries (a map's channels, a sequence's tokens), as torch's slice takes them; Unmappable for another
    index, a step, or an empty slice (``what``: the op's own form, for the message)."""
    full = slice(None)
    need(isinstance(index, tuple) and len(index) >= 2 and index[0] == full and isinstance(index[1], slice)
         and all(i == full or i is Ellipsis for i in index[2:]) and size > 0,
         f"indexing with {index!r} ({what})")
    part = index[1]
    need(part.step in (None, 1), f"a slice with step {part.step}")
    start, end, _ = part.indices(size)
    need(end > start, f"an empty slice {start}:{end}")
    return start, end


@dataclass(frozen=True)
class Params:
    weights: int = 0
    biases: int = 0
    buffers: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.biases


@dataclass(frozen=True)
class Window:
    """How an op slides over H and W: kernel, stride, padding before, dilation (per axis)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)


# The kernel classes of a machine profile that are no measured kernel (see archcompiler.passes.machine).
STATEMENT = "statement"   # one Python statement and no work (a view): the profile's call overhead
MEMORY = "memory"         # a kernel the profile does not measure: its bytes at memory bandwidth
# the calibrated kernels (archcompiler.passes.machine.KERNELS keeps the same list: a test keeps them equal)
KernelClass = Literal["conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise", "batch_norm", "relu", "max_pool",
                      "max_pool_s2", "avg_pool", "adaptive_pool", "lrn", "concat", "add", "linear", "matmul",
                      "attention", "statement", "memory"]


@dataclass(frozen=True)
class Kernel:
    """One op as the machine profile sees it: its kernel class (a key of the profile without the
    layout, or STATEMENT / MEMORY), the shape it is looked up by (channels in and out, map size) and
    its work per sample (multiply-adds for convolutions and linear layers, element operations otherwise)."""

    kind: str
    features: tuple[int, int, int] = (0, 0, 0)
    work: float = 0


@dataclass(frozen=True)
class Latency:
    """``classes``: every kernel class the op may run as; ``kernel``: which one, for these
    attributes, input shapes and output shape."""

    classes: tuple[str, ...]
    kernel: Callable[[Attrs, list[Shape], Shape], Kernel]

    def __post_init__(self) -> None:
        _check("latency class", self.classes, KernelClass)


AT_MEMORY_SPEED = Latency((MEMORY,), lambda a, i, o: Kernel(MEMORY))
A_STATEMENT = Latency((STATEMENT,), lambda a, i, o: Kernel(STATEMENT))


@dataclass(frozen=True)
class TorchCode:
    """The op in the generated torch module: ``module(attrs, input shapes, output shape)`` the text
    of its submodule's constructor (None for a functional op: no parameters), ``call(attrs, input
    variables, module path, in place)`` the expression of its forward; ``sequence_call`` the call
    where the input is a sequence of tokens. ``helper``: a class or function the code uses, as
    ``"module.path:Name"``: archc's own (``archcompiler.backends.torch.runtime``) are copied into
    the generated source, so it stays standalone; another package's are imported from it."""

    module: Callable[[Attrs, list, tuple], str] | None
    call: Callable[[Attrs, list[str], str, bool], str]
    helper: str | None = None
    sequence_call: Callable[[Attrs, list[str], str, bool], str] | None = None
    # the call where it depends on the input shapes too (TensorFlow's 'same' padding at stride 2: its pads)
    shaped_call: Callable[[Attrs, list[str], str, bool, list], str] | None = None

    def call_on(self, attrs: Attrs, xs: list[str], module: str, inplace: bool, ins: list) -> str:
        """The call for these input shapes: ``sequence_call`` where the first input is a sequence."""
        if self.shaped_call is not None:
            return self.shaped_call(attrs, xs, module, inplace, ins)
        if self.sequence_call is not None and ins and len(ins[0]) == 2:
            return self.sequence_call(attrs, xs, module, inplace)
        return self.call(attrs, xs, module, inplace)


@dataclass(frozen=True)
class Style:
    """How a layer is drawn, by the IR kind of its main node: graphviz shape and fill, and what its
    label shows after the op's name and patch (a conv's output channels, ...)."""

    shape: Literal["box", "ellipse", "circle", "box3d"] = "box"
    fill: str = "#f5f5f5"
    detail: Callable[[Attrs], str] = lambda attrs: ""

    def __post_init__(self) -> None:
        _check("style shape", (self.shape,), Literal["box", "ellipse", "circle", "box3d"])


Depth = Literal["params", "pooling"]
Join = Literal["stack", "sum"]
Alias = Literal["view", "eval"]
Fuses = Literal["affine", "activation", "siblings"]


@dataclass(frozen=True)
class OpDef:
    """Every fact archc uses about one IR op kind.

    - ``shape``: the output shape from the inputs' (PyTorch's exact formulas), or :class:`ShapeError`;
    - ``attrs``: the attribute names its lowering writes (the lowering is checked against them);
    - ``params``, ``macs``, ``elementwise``: parameters, multiply-accumulates and element operations;
    - ``window``: how it moves the receptive field; ``depth``: whether it counts in the paper's depth
      (``"params"``: conv, linear; ``"pooling"``); ``patch``: Table 1's "patch size/stride" column;
    - ``join``: how an op of many inputs combines them: ``"stack"`` (along channels: height and width
      agree) or ``"sum"`` (element-wise: the whole shape agrees);
    - ``alias``: ``"view"`` when the output shares its first input's memory in every mode (identity,
      flatten, a channel slice); ``"eval"`` when it is the input itself in evaluation mode and a new
      tensor in training (dropout: evaluation drops the op);
    - ``passthrough``: whether, for these attributes and input shapes, the value passes through
      unchanged and nothing is computed (identity; flatten of a flat input);
    - ``inplace``: whether PyTorch computes it over its input (when that input has no other reader);
    - ``workspace``: transient memory while it runs, in float32 elements (``batch_workspace``: for a
      whole batch, where part of it does not grow with the batch); ``saves`` (``saves_once``: kept once
      per forward): what autograd keeps for backward, ``"input"`` and/or ``"output"`` and extra
      elements; ``backward_workspace``: transient memory while its backward runs;
      ``grad_passthrough``: the backward pass hands the gradient on as views, allocating none (a bool, or a
      function of the attributes and the input and output shapes: an add of one shape, not one that broadcasts);
    - ``probabilities``: it turns logits into class probabilities (softmax): as a model's final op,
      forward() returns the logits before it and ``predict_proba`` applies it;
    - ``latency``: the kernel class it runs as on a machine profile and its work, see :class:`Latency`;
    - ``eval_affine``: in evaluation a per-channel affine map (BatchNorm), which folds into a
      convolution before it; ``fuses``: what the op absorbs in ``--optimize`` (``"affine"`` after it,
      a fusable ``"activation"`` after it, ``"siblings"`` reading the same tensor); ``fusable``: it is
      an activation a convolution can absorb; ``channels_last``: it runs faster on channels-last tensors;
    - ``mixes``: every output position sees every input position (attention); ``pointwise``: each output
      element is computed from the same element of its one input (the activations: what a layer's ``act:``
      absorbs when archc imports a model); ``shape_inputs``: the positions of the inputs it reads for their
      shape alone (interpolate's ``size_of``), whose values reach no output pixel (the receptive field leaves
      them out);
    - ``view_out``: for these input shapes its output is a view of the tensor it computes (batch_norm over a
      sequence: the N S x D tokens' norm viewed as N x S x D): nothing computes in place over it, as
      autograd would copy the whole tensor back in backward (measured: tests/test_levit.py);
    - ``torch``: its code in the generated module; ``style``: how the diagram draws it;
      ``init``: the name of its weight-initialisation family (``"conv"``, ``"linear"``, ``"norm"``) or None.
    """

    kind: str
    shape: Callable[[Attrs, list[Shape]], Shape]
    torch: TorchCode
    style: Style = Style()
    attrs: tuple[str, ...] = ()
    params: Callable[[Attrs, list[Shape], Shape], Params] = lambda a, i, o: Params()
    macs: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    elementwise: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: math.prod(o)
    window: Callable[[Attrs, list[Shape]], Window | None] = lambda a, i: None
    workspace: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    batch_workspace: Callable[[Attrs, list[Shape], Shape, int], int] | None = None
    saves: Callable[[Attrs, list[Shape], Shape], tuple[tuple[str, ...], int]] = lambda a, i, o: ((), 0)
    saves_once: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    backward_workspace: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    depth: Depth | None = None
    patch: Callable[[Attrs], str] = lambda a: ""
    join: Join | None = None
    alias: Alias | None = None
    passthrough: Callable[[Attrs, list[Shape]], bool] = lambda a, i: False
    inplace: Callable[[Attrs], bool] = lambda a: False
    grad_passthrough: bool | Callable[[Attrs, list[Shape], Shape], bool] = False
    probabilities: bool = False
    latency: Latency = AT_MEMORY_SPEED
    eval_affine: bool = False
    fuses: frozenset[str] = frozenset()
    fusable: Callable[[Attrs], bool] = lambda a: False
    channels_last: bool = False
    mixes: bool = False
    pointwise: bool = False             # each element from the same element of its one input (an activation)
    shape_inputs: Callable[[Attrs], tuple[int, ...]] = lambda a: ()     # inputs read for their shape alone
    # its output, for these input shapes, is a view of the tensor it computes (see view_out above)
    view_out: Callable[[Attrs, list[Shape]], bool] = lambda a, i: False

    def passes_gradient(self, a: Attrs, i: list[Shape], o: Shape) -> bool:
        """Whether the backward pass of this op with these shapes hands the gradient on as views."""
        return self.grad_passthrough(a, i, o) if callable(self.grad_passthrough) else self.grad_passthrough

    def __post_init__(self) -> None:
        _check("depth", () if self.depth is None else (self.depth,), Depth)
        _check("join", () if self.join is None else (self.join,), Join)
        _check("alias", () if self.alias is None else (self.alias,), Alias)
        _check("fuses", tuple(self.fuses), Fuses)
        if not self.kind.isidentifier():
            raise TypeError(f"op kind {self.kind!r} is not an identifier")


@dataclass(frozen=True)
class FromTorch:
    """A torch call that means an op: ``kind`` the IR kind it becomes, ``layer(seen)`` the spec
    layer's fields (``{"op": ...}``), None where the call gives its input back, or :class:`Unmappable`;
    ``params``: a function's arguments after its tensor inputs, in order; ``modules``: the packages
    whose classes of that name it reads (a class name alone would match anyone's); ``first``: the call returns
    a tuple whose first element is the layer's output (``x.max(dim)``: the values and the indices), read as
    ``[0]`` or ``.values``; a read of the rest is refused.

    A key ``else:KEY`` is what a call of ``KEY`` is where ``KEY``'s own op refuses it (a mean over H and W is
    a global average pool, any other mean a ``reduce``); it reads the same arguments as ``KEY``'s entry."""

    kind: str
    layer: Callable[[Any], dict | None]
    params: tuple[str, ...] = ()
    modules: tuple[str, ...] = ("torch.nn", "torchvision")
    first: bool = False


@dataclass(frozen=True)
class FromOnnx:
    """An ONNX node that means an op: ``layer(node)`` the spec layer's fields or :class:`Unmappable`;
    ``weights``: its initializer inputs by position -> the ``state_dict`` suffix each becomes. A key
    ``else:OP_TYPE`` is what a node of that type is where its own entry refuses it (a MatMul of two layers'
    outputs, not by a constant matrix)."""

    layer: Callable[[Any], dict | None]
    weights: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerOp:
    """A spec op: the pydantic model of its fields and its lowering to IR kinds; ``main``: the IR kind of the
    node that holds its output's name (default: the module's one kind), whose facts the importers read."""

    model: type
    lower: Callable[[Any], list[Prim]]
    main: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The ``op:`` names a spec writes for it (the model's ``op`` Literal)."""
        return tuple(get_args(self.model.model_fields["op"].annotation))

    @property
    def doc(self) -> str:
        """The model's docstring, its first paragraph on one line."""
        text = (self.model.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(text.split()).replace("``", "`")


@dataclass(frozen=True)
class Op:
    """What one op module declares (see the module docstring)."""

    layers: tuple[LayerOp, ...] = ()
    kinds: tuple[OpDef, ...] = ()
    from_torch: dict[str, FromTorch] = field(default_factory=dict)
    from_onnx: dict[str, FromOnnx] = field(default_factory=dict)


# ----------------------------------------------------------------------------- shared shape rules


def fmt(shape: Shape) -> str:
    return shape_text(shape)


def image(kind: str, shapes: list[Shape]) -> Shape:
    """The one input of an op over an image, ``(C, H, W)``."""
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    s = shapes[0]
    if len(s) == 2:
        raise ShapeError(f"{kind} needs an image (H x W x C) input, got a sequence {fmt(s)} (tokens x dim)")
    if len(s) == 4:
        raise ShapeError(f"{kind} needs an image (H x W x C) input, got a clip {fmt(s)} (T x H x W x C: a clip "
                         f"goes through conv3d, batch_norm, global_avg_pool3d, flatten and element-wise ops)")
    if len(s) != 3:
        raise ShapeError(f"{kind} needs an image (H x W x C) input, got a flat {fmt(s)}")
    return s


def sequence(kind: str, shapes: list[Shape]) -> Shape:
    """The one input of an op over a sequence of tokens, ``(S, D)``."""
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    s = shapes[0]
    if len(s) != 2:
        what = {3: "an image", 4: "a clip"}.get(len(s), "a flat")
        raise ShapeError(f"{kind} needs a sequence (tokens x dim) input, got {what} {fmt(s)}")
    return s


def image_or_sequence(kind: str, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    if len(shapes[0]) == 2:
        return shapes[0]
    return image(kind, shapes)


def same(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    """The shape rule of an op of one input that keeps its shape, whatever it is."""
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        if len(shapes) != 1:
            raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
        return shapes[0]
    return rule


def channels_same(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    """The shape rule of an op over an image that keeps its shape."""
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        image(kind, shapes)
        return shapes[0]
    return rule


# the broadcasting rule of broadcast() in words, for the field docs of the ops that use it
BROADCASTS = ("they broadcast as torch broadcasts the batched tensors: the same number of dims, each equal or 1 in "
              "one of them (a C x 1 x 1 gate or a 1 x H x W map against C x H x W, a 1 x D row against S x D; a flat "
              "D against S x D does not)")


def broadcast(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    """The shape rule of an element-wise op of two inputs that broadcast as PyTorch broadcasts them: of one
    rank, and each dimension equal or 1 in one of them (squeeze-and-excitation: a map times a C x 1 x 1 gate)."""
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"{kind} takes two inputs, got {len(shapes)}")
        x, y = shapes
        if len(x) != len(y) or any(p != q and 1 not in (p, q) for p, q in zip(x, y)):
            raise ShapeError(f"{kind} needs inputs that broadcast (each dimension equal, or 1 in one of them), "
                             f"got {fmt(x)} and {fmt(y)}")
        return tuple(max(p, q) for p, q in zip(x, y))
    return rule


def two_layers(kind: str, what: str) -> tuple[Callable[[Any], dict], Callable[[Any], dict]]:
    """The ``from_torch`` and ``from_onnx`` mappings of an element-wise op of exactly two layers' outputs
    (``what``: "takes the difference of two layers"): a constant operand, or more than two, refused."""
    def torch_layer(s: Any) -> dict:
        need(len(s.shapes) >= 2, f"an operation with a constant (archc's {kind} {what})")
        need(len(s.shapes) == 2, f"a {kind} of more than two tensors")
        return {"op": kind}

    def onnx_layer(n: Any) -> dict:
        need(all(c is None for c in n.consts), f"a {kind} with a constant")
        need(len(n.consts) == 2, f"{len(n.consts)} input{'s' * (len(n.consts) != 1)} (archc's {kind} takes two)")
        return {"op": kind}
    return torch_layer, onnx_layer


def spatial(a: Attrs, h: int, w: int, pads: tuple[tuple[int, int], tuple[int, int]], ceil: bool = False) -> tuple[int, int]:
    """Output height and width of a window op (kernel, stride, dilation in ``a``), or :class:`TooSmall`."""
    dil = a.get("dilation", (1, 1))
    oh = out_size(h, a["kernel"][0], a["stride"][0], *pads[0], dil[0], ceil)
    ow = out_size(w, a["kernel"][1], a["stride"][1], *pads[1], dil[1], ceil)
    if oh < 1 or ow < 1:
        raise TooSmall(f"output would be {oh}x{ow}: the {h}x{w} input is too small for kernel "
                       f"{a['kernel'][0]}x{a['kernel'][1]}, stride {a['stride'][0]}")
    return oh, ow


def positions(o: Shape) -> int:
    """The positions a per-position op (a LayerNorm) normalises: an image's H x W, a sequence's tokens."""
    return o[0] if len(o) == 2 else o[1] * o[2]


def features(o: Shape) -> int:
    """The features of each position: an image's channels, a token's dimension."""
    return o[-1] if len(o) == 2 else o[0]


def elements(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o)


def window_elements(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * a["kernel"][0] * a["kernel"][1]


def strided(a: Attrs) -> bool:
    return max(a["stride"]) > 1


def kxs(a: Attrs) -> str:
    """Table 1's patch size / stride: ``3x3/2``."""
    (kh, kw), (sh, _) = a["kernel"], a["stride"]
    return f"{kh}x{kw}/{sh}"


def per_map(classes: tuple[str, ...], choose: Callable[[Attrs], str],
            work: Callable[[Attrs, list[Shape], Shape], int],
            by_input: Callable[[Attrs], bool] = lambda a: False) -> Latency:
    """An op over a feature map, timed like the calibrated kernel ``choose`` names, looked up by its
    channels and map size (the output's, or the input's where ``by_input``); on a flat tensor, at
    memory speed."""
    def kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
        if len(o) != 3:
            return Kernel(MEMORY)
        c, h, _ = i[0] if by_input(a) else o
        return Kernel(choose(a), (c, c, h), work(a, i, o))
    return Latency((*classes, MEMORY), kernel)


def t2(pair: Any) -> str:
    """A pair as torch code: ``(3, 3)``."""
    return f"({pair[0]}, {pair[1]})"


def owns(s: Any, *names: str) -> None:
    """In a ``from_torch`` mapping of a functional call (``F.batch_norm(x, self.running_mean, ...)``): the
    call reads its module's own ``names`` (``s.arg["own"]``: argument -> parameter path), each the
    parameter of that name, so the layer's ``state_dict`` keys are the module's."""
    own = s.arg.get("own") or {}
    need(set(names) <= set(own), f"a call whose {', '.join(n for n in names if n not in own)} is not its module's "
                                 "own parameter (archc maps the parameters of the module that calls it)")
    wrong = [k for k, v in own.items() if v.rpartition(".")[2] != k]
    need(not wrong, f"parameters named other than the layer's own ({', '.join(f'{k}: {own[k]}' for k in wrong)})")


def one(value: Any) -> Any:
    """For a spec field from torch: (3, 3) -> 3; [3, 5] stays a pair; a number stays."""
    if isinstance(value, (tuple, list)):
        value = [int(v) for v in value]
        return value[0] if len(set(value)) == 1 else value
    return int(value) if not isinstance(value, (bool, str)) else value
