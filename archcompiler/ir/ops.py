"""The op table: every primitive op of the IR, declared once.

Each :class:`OpDef` says, for one op kind, every fact archc uses about it. Passes and backends
dispatch through :data:`OPS` (and :data:`ACTIVATIONS` for the kinds of the ``activation`` op);
nothing else in archc compares an op kind with a name (``tests/test_op_table.py`` checks the
source; the spec language's own ``op`` names, which come before the IR, are ``spec/layers.py``'s). The backends keep their own small tables, keyed by op kind: the torch mapping
(``backends/torch/codegen.py``) and the drawing style (``backends/dot.py``). The fields:

- ``shape``: the output shape from the inputs' (PyTorch's exact formulas), or :class:`ShapeError`;
- ``params``, ``macs``, ``elementwise``: parameters, multiply-accumulates and element operations;
- ``window``: how it moves the receptive field; ``depth``: whether it counts in the paper's depth;
  ``patch``: Table 1's "patch size/stride" column;
- ``join``: how an op of many inputs combines them, and so what they must agree on: ``"stack"``
  (along channels: height and width agree) or ``"sum"`` (element-wise: the whole shape agrees);
- ``alias``: ``"view"`` when the output shares its first input's memory in every mode (identity,
  flatten, a channel slice); ``"eval"`` when it is the input itself in evaluation mode and a new
  tensor in training (dropout: evaluation drops the op, see ``passes/optimize/eval_only.py``);
- ``passthrough``: whether, for these attributes and input shapes, the value passes through
  unchanged and nothing is computed (identity; flatten of a flat input);
- ``inplace``: whether PyTorch computes it over its input (when that input has no other reader);
- ``workspace``: transient memory while it runs (``batch_workspace``: for a whole batch, where part
  of it does not grow with the batch); ``saves`` (``saves_once``: what is kept once per forward): what autograd keeps for backward;
  ``backward_workspace``: transient memory while its backward runs;
  ``grad_passthrough``: the backward pass hands the gradient on as views, allocating none;
- ``probabilities``: it turns logits into class probabilities (softmax): as a model's final op,
  forward() returns the logits before it and ``predict_proba`` applies it;
- ``latency``: the kernel class it runs as on a machine profile (one of
  ``archcompiler.passes.machine.KERNELS``, or ``STATEMENT``/``MEMORY``) and its work, see :class:`Latency`;
- ``eval_affine``: in evaluation a per-channel affine map (BatchNorm), which folds into a
  convolution before it; ``fuses``: what the op absorbs in ``--optimize`` (``"affine"`` after it,
  a fusable ``"activation"`` after it, ``"siblings"`` reading the same tensor);
  ``channels_last``: it runs faster on channels-last tensors (the layout pass chooses them).

- ``mixes``: every output position sees every input position (attention): the receptive field
  becomes the whole input.

Shapes are per sample: ``(C, H, W)`` for images, ``(S, D)`` for a sequence of S tokens of D
features (ViT's ``197x768``), ``(F,)`` after flattening. An op states which it takes: an image op
given a sequence (or a sequence op an image) is a :class:`ShapeError` naming both.
Cost convention: one multiply-add = 1 MAC; FLOPs = 2 x MACs (as torch's FlopCounterMode counts
conv and linear).  Memory-bound ops (pooling, normalisation, activation, concat, add) are counted
apart, as element operations, never as MACs.

Adding an op: see the README's architecture section ("Adding an op").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..util import shape_text

Shape = tuple[int, ...]
Attrs = dict[str, Any]


class ShapeError(ValueError):
    """An op cannot take the shapes it is given; the message lists them."""


class TooSmall(ShapeError):
    """A window (conv, pooling) would leave no output: the map reaching it is too small, most
    often because the network's input is (shape inference then looks for the smallest that works)."""


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


_AT_MEMORY_SPEED = Latency((MEMORY,), lambda a, i, o: Kernel(MEMORY))
_A_STATEMENT = Latency((STATEMENT,), lambda a, i, o: Kernel(STATEMENT))


@dataclass(frozen=True)
class OpDef:
    kind: str
    shape: Callable[[Attrs, list[Shape]], Shape]
    params: Callable[[Attrs, list[Shape], Shape], Params] = lambda a, i, o: Params()
    macs: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    elementwise: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: math.prod(o)
    window: Callable[[Attrs, list[Shape]], Window | None] = lambda a, i: None
    # transient memory while the op runs, beyond its inputs and output, in float32 elements
    # (what PyTorch's kernel allocates and frees again: measured, see tests/test_memory.py)
    workspace: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    # the same for a whole batch, where part of it does not grow with the batch (Swin V2's position-bias
    # MLP runs once per forward): when set, it replaces batch x workspace
    batch_workspace: Callable[[Attrs, list[Shape], Shape, int], int] | None = None
    # what autograd keeps for the backward pass in training: "input" and/or "output" (the tensors
    # themselves, shared with the forward) and extra float32 elements (indices, masks, temporaries)
    saves: Callable[[Attrs, list[Shape], Shape], tuple[tuple[str, ...], int]] = lambda a, i, o: ((), 0)
    # float32 elements autograd keeps once per forward, whatever the batch (Swin V2's position-bias MLP)
    saves_once: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    # transient memory while its backward pass runs, beyond the gradients it hands on, in float32
    # elements (a broadcast input's gradient is computed at the output's size, then summed down)
    backward_workspace: Callable[[Attrs, list[Shape], Shape], int] = lambda a, i, o: 0
    depth: str | None = None            # "params" (conv, linear) or "pooling": counted in depth
    patch: Callable[[Attrs], str] = lambda a: ""   # Table 1's "patch size/stride" column
    join: str | None = None             # many inputs: "stack" (along channels) or "sum" (element-wise)
    alias: str | None = None            # "view" (always shares its input) or "eval" (the input in eval mode)
    passthrough: Callable[[Attrs, list[Shape]], bool] = lambda a, i: False
    inplace: Callable[[Attrs], bool] = lambda a: False
    grad_passthrough: bool = False      # backward hands the gradient on as views
    probabilities: bool = False         # logits -> class probabilities (softmax)
    latency: Latency = _AT_MEMORY_SPEED
    eval_affine: bool = False           # a per-channel affine map in evaluation (BatchNorm)
    fuses: frozenset[str] = frozenset()  # "affine", "activation", "siblings": what --optimize folds into it
    channels_last: bool = False         # faster on channels-last tensors
    mixes: bool = False                 # every output token sees every input token (attention)


@dataclass(frozen=True)
class ActivationDef:
    """One kind of the ``activation`` op (``attrs["kind"]``): what autograd saves for its backward
    pass (``"input"`` or ``"output"``: the tensor it differentiates from), whether PyTorch computes it
    in place (as torchvision's modules do: ``nn.ReLU(inplace=True)``, ``nn.Hardswish(inplace=True)``),
    and whether ``--optimize`` fuses it into the convolution before it (oneDNN's post-op)."""

    kind: str
    saves: str
    inplace: bool = False
    fusable: bool = False


ACTIVATIONS: dict[str, ActivationDef] = {a.kind: a for a in [
    ActivationDef("relu", saves="output", inplace=True, fusable=True),
    ActivationDef("relu6", saves="input", inplace=True),           # hardtanh_: autograd clones the input first
    ActivationDef("leaky_relu", saves="output", inplace=True),
    ActivationDef("sigmoid", saves="output"),
    ActivationDef("tanh", saves="output"),
    ActivationDef("gelu", saves="input"),
    ActivationDef("silu", saves="input", inplace=True),
    ActivationDef("hardswish", saves="input", inplace=True),       # torchvision: nn.Hardswish(inplace=True)
    ActivationDef("hardsigmoid", saves="input"),                   # torchvision: nn.Hardsigmoid()
]}


def _image(kind: str, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    s = shapes[0]
    if len(s) == 2:
        raise ShapeError(f"{kind} needs an image (H x W x C) input, got a sequence {_fmt(s)} (tokens x dim)")
    if len(s) != 3:
        raise ShapeError(f"{kind} needs an image (H x W x C) input, got a flat {_fmt(s)}")
    return s


def _sequence(kind: str, shapes: list[Shape]) -> Shape:
    """The one input of an op over a sequence of tokens, ``(S, D)``."""
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    s = shapes[0]
    if len(s) != 2:
        what = "an image" if len(s) == 3 else "a flat"
        raise ShapeError(f"{kind} needs a sequence (tokens x dim) input, got {what} {_fmt(s)}")
    return s


def _image_or_sequence(kind: str, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
    if len(shapes[0]) == 2:
        return shapes[0]
    return _image(kind, shapes)


def _fmt(shape: Shape) -> str:
    return shape_text(shape)


def conv_padding(a: Attrs) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding (before, after) per axis; 'same' pads like PyTorch (the extra pixel after)."""
    pad = a["padding"]
    if pad == "same":
        out = []
        for k, d in zip(a["kernel"], a["dilation"]):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return out[0], out[1]
    if pad == "valid":
        return (0, 0), (0, 0)
    return (pad[0], pad[0]), (pad[1], pad[1])


def _conv_out(size: int, k: int, s: int, before: int, after: int, d: int, ceil: bool = False) -> int:
    span = size + before + after - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + before:
        out -= 1           # PyTorch: the last window must start inside the input or left padding
    return out


def _spatial(kind: str, a: Attrs, h: int, w: int, ceil: bool = False) -> tuple[int, int]:
    pads = conv_padding(a) if kind == "conv2d" else ((a["padding"][0],) * 2, (a["padding"][1],) * 2)
    dil = a.get("dilation", (1, 1))
    oh = _conv_out(h, a["kernel"][0], a["stride"][0], *pads[0], dil[0], ceil)
    ow = _conv_out(w, a["kernel"][1], a["stride"][1], *pads[1], dil[1], ceil)
    if oh < 1 or ow < 1:
        raise TooSmall(f"output would be {oh}x{ow}: the {h}x{w} input is too small for kernel "
                         f"{a['kernel'][0]}x{a['kernel'][1]}, stride {a['stride'][0]}")
    return oh, ow


def _conv_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("conv", shapes)
    if c % a["groups"] or a["out_channels"] % a["groups"]:
        raise ShapeError(f"groups={a['groups']} must divide both the input channels ({c}) and the "
                         f"output channels ({a['out_channels']})")
    return (a["out_channels"], *_spatial("conv2d", a, h, w))


def _conv_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    kh, kw = a["kernel"]
    weights = a["out_channels"] * (i[0][0] // a["groups"]) * kh * kw
    return Params(weights, a["out_channels"] if a["bias"] else 0)


def _conv_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    kh, kw = a["kernel"]
    return math.prod(o) * (i[0][0] // a["groups"]) * kh * kw


def _conv_window(a: Attrs, i: list[Shape]) -> Window:
    (ph, _), (pw, _) = conv_padding(a)
    return Window(a["kernel"], a["stride"], (ph, pw), a["dilation"])


def _pool_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("pool", shapes)
    return (c, *_spatial("pool", a, h, w, a["ceil_mode"]))


def _pool_window(a: Attrs, i: list[Shape]) -> Window:
    return Window(a["kernel"], a["stride"], a["padding"])


def _adaptive_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("adaptive pool", shapes)
    return (c, *a["output"])


def _adaptive_window(a: Attrs, i: list[Shape]) -> Window:
    _, h, w = i[0]
    oh, ow = a["output"]
    k = (-(-h // oh), -(-w // ow))
    s = (max(1, h // oh), max(1, w // ow))
    return Window(k, s, (0, 0))


def _same(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        if len(shapes) != 1:
            raise ShapeError(f"{kind} takes one input, got {len(shapes)}")
        return shapes[0]
    return rule


def _channels_same(kind: str) -> Callable[[Attrs, list[Shape]], Shape]:
    def rule(a: Attrs, shapes: list[Shape]) -> Shape:
        _image(kind, shapes)
        return shapes[0]
    return rule


def _linear_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """A flat ``(F,)`` to ``(out,)``; a sequence ``(S, D)`` to ``(S, out)`` (each token's features,
    as nn.Linear maps the last dimension)."""
    if len(shapes) == 1 and len(shapes[0]) == 2:
        return (shapes[0][0], a["out_features"])
    if len(shapes) != 1 or len(shapes[0]) != 1:
        raise ShapeError(f"linear needs a flat input or a sequence, got {', '.join(_fmt(s) for s in shapes)}")
    return (a["out_features"],)


def _flatten_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"flatten takes one input, got {len(shapes)}")
    return (math.prod(shapes[0]),)


def _flatten_window(a: Attrs, i: list[Shape]) -> Window | None:
    if len(i[0]) != 3:
        return None
    _, h, w = i[0]
    return Window((h, w), (1, 1), (0, 0))


def _concat_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) != 1:
        raise ShapeError("concat needs inputs of the same height and width, got "
                         + ", ".join(_fmt(s) for s in shapes))
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _add_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(set(shapes)) != 1:
        raise ShapeError("add needs inputs of one shape, got " + ", ".join(_fmt(s) for s in shapes))
    return shapes[0]


def _mul_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """Two inputs that broadcast as PyTorch broadcasts them: of one rank, and each dimension equal
    or 1 in one of them (squeeze-and-excitation: a C x H x W map times a C x 1 x 1 gate)."""
    if len(shapes) != 2:
        raise ShapeError(f"mul takes two inputs, got {len(shapes)}")
    a_, b = shapes
    if len(a_) != len(b) or any(x != y and 1 not in (x, y) for x, y in zip(a_, b)):
        raise ShapeError(f"mul needs inputs that broadcast (each dimension equal, or 1 in one of them), "
                         f"got {_fmt(a_)} and {_fmt(b)}")
    return tuple(max(x, y) for x, y in zip(a_, b))


def _channel_linear_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    _, h, w = _image("a linear over channels", shapes)
    return (a["out_features"], h, w)


def _bn_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    c = o[0]
    return Params(c, c, 2 * c + 1)   # running mean, running var, num_batches_tracked


def _linear_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    return Params(i[0][-1] * a["out_features"], a["out_features"] if a["bias"] else 0)


def _lrn_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """F.local_response_norm holds, besides its input and output, at most two full-size
    temporaries ((k + alpha * avg)^beta is built in steps) or x^2 with its channel-padded copy
    (C + size - 1 channels), whichever is larger."""
    c, h, w = o
    return max(2 * c, c + a["size"] - 1) * h * w


def _positions(o: Shape) -> int:
    """The positions a per-position op (a LayerNorm) normalises: an image's H x W, a sequence's tokens."""
    return o[0] if len(o) == 2 else o[1] * o[2]


def _features(o: Shape) -> int:
    """The features of each position: an image's channels, a token's dimension."""
    return o[-1] if len(o) == 2 else o[0]


def _ln_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """F.layer_norm over the channels-last view (or a sequence's last dimension): mean and 1 / std
    per position (measured: the strided input is read as it is, not copied)."""
    return 2 * _positions(o)


def _patch_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """ViT's patch embedding: a p x p, stride p convolution to D channels, its map flattened into
    (H / p) x (W / p) tokens of D features; the patch must tile the image (torchvision asserts it)."""
    c, h, w = _image("patch_embed", shapes)
    p = a["patch"]
    if h % p or w % p:
        raise ShapeError(f"patch {p}x{p} does not tile the image {_fmt(shapes[0])}: {h}x{w} is not a multiple of {p}")
    return ((h // p) * (w // p), a["out_channels"])


def _patch_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    return Params(a["out_channels"] * i[0][0] * a["patch"] ** 2, a["out_channels"] if a["bias"] else 0)


def _patch_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * i[0][0] * a["patch"] ** 2


def _class_token_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = _sequence("class_token", shapes)
    return (s + 1, d)


def _attention_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = _sequence("self_attention", shapes)
    if d % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the dimension {d} of the sequence {_fmt(shapes[0])}: "
                         f"each head takes {d} / {a['heads']} features")
    return (s, d)


def _attention_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The q, k, v and output projections (4 S D^2), QK^T (S^2 D: S x S scores per head, D / h deep,
    h heads) and the scores times V (S^2 D)."""
    s, d = o
    return 4 * s * d * d + 2 * s * s * d


def _saves_attention(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """F.multi_head_attention_forward in training: the input (in_proj's), q, k and v (one contiguous
    S x 3D copy of the projection), the attention's output (the heads' output out_proj reads is a
    view of it) and its log-sum-exp per head and token: scaled_dot_product_attention's fused kernel
    keeps these, not the S x S scores (measured: tests/test_tokens.py)."""
    s, d = o
    return ("input",), 4 * s * d + a["heads"] * s


def _window_attention_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """Swin's window attention keeps the map's shape; the window must tile it, unless ``pad`` pads
    the map with zeros to the next multiple of the window first (as torchvision does, and crops the
    result); the heads must divide its channels."""
    c, h, w = _image("window_attention", shapes)
    win = a["window"]
    if a["grid"] and (h % win or w % win or a["shift"]):
        raise ShapeError(f"grid attention's {win}x{win} grid must tile the map {_fmt(shapes[0])} evenly (no padding, "
                         f"no shift): {h}x{w} is not a multiple of {win}" if h % win or w % win
                         else "grid attention does not shift its grid (shift must be 0)")
    if (h % win or w % win) and not a["pad"]:
        raise ShapeError(f"window {win}x{win} does not tile the map {_fmt(shapes[0])}: {h}x{w} is not a "
                         f"multiple of {win} (pad: true pads the map to one, as torchvision does)")
    if c % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the {c} channels of the map {_fmt(shapes[0])}: "
                         f"each head takes {c} / {a['heads']} features")
    if a["shift"] >= win:
        raise ShapeError(f"shift {a['shift']} must be smaller than the window {win}x{win}")
    return shapes[0]


CPB_HIDDEN = 512        # Swin V2's continuous position bias: an MLP 2 -> 512 -> heads (torchvision's)


def _padded(a: Attrs, o: Shape) -> int:
    """The positions window attention computes over: the map padded to a multiple of the window."""
    win = a["window"]
    return -(-o[1] // win) * win * -(-o[2] // win) * win


def _window_attention_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (C -> 3C) and proj (C -> C) with biases; the relative position bias: a (2W - 1)^2 x heads
    table, or (cosine, Swin V2) the MLP that computes it and the per-head logit scale; buffers: the
    W^4 relative position index (and V2's (2W - 1)^2 x 2 coordinates table)."""
    c, h, w = o[0], a["heads"], a["window"]
    cells = (2 * w - 1) ** 2
    weights, biases, buffers = 4 * c * c, 4 * c, w ** 4
    if a["cosine"]:
        weights += 2 * CPB_HIDDEN + CPB_HIDDEN * h + h
        biases += CPB_HIDDEN
        buffers += 2 * cells
    else:
        weights += cells * h
    return Params(weights, biases, buffers)


def _window_attention_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The qkv and output projections (4 N C^2 over the map's N = H x W positions), QK^T and the
    scores times V within each window (N W^2 C each: N / W^2 windows of W^2 x W^2 scores per head,
    C / heads deep); Swin V2's position-bias MLP runs once per forward over the (2W - 1)^2 offsets
    (counted per image: the batch shares it). A padded map costs its padded size (torchvision's)."""
    c, n, win = o[0], _padded(a, o), a["window"]
    macs = 4 * n * c * c + 2 * n * win * win * c
    if a["cosine"]:
        macs += (2 * win - 1) ** 2 * (2 * CPB_HIDDEN + CPB_HIDDEN * a["heads"])
    return macs


def _window_scores(a: Attrs, o: Shape) -> int:
    """The attention scores of all windows: heads x N x W^2 (N / W^2 windows of W^2 x W^2 per head)."""
    return a["heads"] * _padded(a, o) * a["window"] ** 2


def _window_attention_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """The most the module holds at once beyond its input and output, for a whole batch (measured with
    torch: tests/test_swin.py). With P the padded map, S the windows' scores and X the map: the windows
    (P) and q, k, v (3P) live through the attention; at QK^T, the scaled q (V2: the normalised q and k)
    and, where the windows and heads do not fold into one batch dimension as views, matmul's contiguous
    copies of both; then the scores with the position bias (heads x W^4) or softmax's output (2S); at
    AV, the output and a copy of v or of the heads' transposed output. V2 adds its q, v bias (3C) and,
    once per forward whatever the batch, the position-bias MLP's hidden (2W - 1)^2 x 512 and output."""
    c, heads, win = o[0], a["heads"], a["window"]
    p, s, x = batch * _padded(a, o) * c, batch * _window_scores(a, o), batch * math.prod(o)
    windows = batch * _padded(a, o) // win ** 2
    copies = p if windows > 1 and heads > 1 and win > 1 else 0      # matmul's reshape to a batch of matrices
    ph, pw = -(-o[1] // win) * win, -(-o[2] // win) * win
    moved = ph > o[1] or pw > o[2] or (win < ph or win < pw) and a["shift"] > 0      # padded or rolled: a copy
    windowed = p if moved or pw > win or a["grid"] else 0    # one window across: the windows are a view of the map
    bias = heads * win ** 4
    av = 3 * p + windowed + s + p + max(copies, p if heads > 1 else 0)
    qkv = 3 * p + windowed
    if not a["cosine"]:
        return max(qkv + p + 2 * copies + s, qkv + 2 * s, qkv + s + bias, av) - x
    cells = (2 * win - 1) ** 2
    return 3 * c + max(qkv + 2 * p + 2 * copies + s, qkv + 2 * s + heads, qkv + s + cells * (CPB_HIDDEN + heads),
                       qkv + s + cells * heads + 2 * bias, av) - x


def _patch_merging_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("patch_merging", shapes)
    return (a["out_channels"] or 2 * c, (h + 1) // 2, (w + 1) // 2)


def _window_attention_saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (measured, tests/test_swin.py): the windows (qkv's input; the map itself
    where they are a view of it), q and k as QK^T reads them, the softmax's output (S), v and the
    heads' output (proj's input); V2 also its normalised q and k with their norms and the scores
    before the logit scale (S)."""
    c, heads, win = o[0], a["heads"], a["window"]
    positions = _padded(a, o)
    p, s = positions * c, _window_scores(a, o)
    ph, pw = -(-o[1] // win) * win, -(-o[2] // win) * win
    moved = ph > o[1] or pw > o[2] or (win < ph or win < pw) and a["shift"] > 0
    view = not (moved or pw > win or a["grid"])
    kept = 2 * s + 8 * p + 4 * heads * positions if a["cosine"] else s + 5 * p
    return (("input",), kept - p) if view else ((), kept)


def _window_attention_saves_once(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Swin V2's position-bias MLP, once per forward: its hidden layer, the W^4 bias per head through
    its sigmoid, and the clamped logit scale."""
    if not a["cosine"]:
        return 0
    heads, win = a["heads"], a["window"]
    return (2 * win - 1) ** 2 * CPB_HIDDEN + heads * win ** 4 + heads


def _patch_merging_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Measured (tests/test_swin.py): the 4C x H/2 x W/2 concatenation Q lives through the module;
    before the reduction the LayerNorm's output (Q) and its mean and 1 / std per position; after it,
    the reduction's output and the norm's statistics; the padded copy (Q: F.pad copies, odd sides or
    not, as in torchvision) while it is cut."""
    q, y, positions = 4 * i[0][0] * o[1] * o[2], math.prod(o), o[1] * o[2]
    padded = 2 * q - y
    if a["norm"] == "before":
        return max(2 * q + max(0, 2 * positions - y), padded)
    return max(q + y + 2 * positions, padded)


def _patch_merging_params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    c, out = i[0][0], o[0]
    norm = 4 * c if a["norm"] == "before" else out
    return Params(4 * c * out + norm, norm)


def _patch_merging_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * 4 * i[0][0]


def _select_token_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = _sequence("select_token", shapes)
    if a["index"] >= s:
        raise ShapeError(f"token {a['index']} is not within the sequence {_fmt(shapes[0])} of {s} tokens")
    return (d,)


def _channel_slice_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("channel_slice", shapes)
    if not 0 <= a["start"] < a["end"] <= c:
        raise ShapeError(f"channels {a['start']}:{a['end']} are not within the input's {c}")
    return (a["end"] - a["start"], h, w)


def _channel_split_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("channel_split", shapes)
    if c % 2:
        raise ShapeError(f"channel_split halves the channels and needs an even number of them, got {_fmt(shapes[0])}")
    return (c // 2, h, w)


def _channel_shuffle_shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = _image("channel_shuffle", shapes)
    if c % a["groups"]:
        raise ShapeError(f"channel_shuffle: groups={a['groups']} must divide the input's channels, "
                         f"got {_fmt(shapes[0])}")
    return shapes[0]


def activation_of(op: str, attrs: Attrs) -> ActivationDef | None:
    """The :class:`ActivationDef` of a node of op ``op`` with ``attrs``; None for other ops."""
    return ACTIVATIONS[attrs["kind"]] if op == "activation" else None


def _saves_activation(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    return (ACTIVATIONS[a["kind"]].saves,), 0


def _saves_lrn(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    c, h, w = o        # x^2 padded by size - 1 channels, its window average, (k + alpha * avg)^beta
    return ("input",), (c + a["size"] - 1) * h * w + 2 * c * h * w


def _conv_class(a: Attrs, in_channels: int) -> str:
    """The calibrated convolution a convolution is timed like: depthwise, 7x7/2 (or 5x5/2) stems,
    else by kernel size."""
    k = max(a["kernel"])
    if a["groups"] > 1 and a["groups"] == in_channels:
        return "depthwise"
    if k >= 7 or (k >= 5 and max(a["stride"]) > 1):
        return "conv7x7s2"
    return {1: "conv1x1", 2: "conv3x3", 3: "conv3x3", 4: "conv5x5"}.get(k, "conv5x5")


def _conv_kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    c, h, _ = i[0]
    return Kernel(_conv_class(a, c), (c, a["out_channels"], h), _conv_macs(a, i, o))


def _linear_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o[:-1]) * i[0][-1] * a["out_features"]


def _linear_kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    """A Linear on a flat vector is the calibrated ``linear``; over a sequence's tokens it is a
    matrix product, (S x D) times (D x out): the calibrated ``matmul``, looked up by D, out and S."""
    if len(o) == 2:
        return Kernel("matmul", (i[0][-1], a["out_features"], o[0]), _linear_macs(a, i, o))
    return Kernel("linear", (i[0][0], a["out_features"], 1), _linear_macs(a, i, o))


def _channel_linear_macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * i[0][0]       # one Linear per position: H x W x C_in x C_out


def _channel_linear_kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    """A Linear over each position's channels is a 1x1 convolution's work: timed like one."""
    c, h, _ = i[0]
    return Kernel("conv1x1", (c, a["out_features"], h), _channel_linear_macs(a, i, o))


def _per_map(classes: tuple[str, ...], choose: Callable[[Attrs], str],
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


def _elements(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o)


def _window_elements(a: Attrs, i: list[Shape], o: Shape) -> int:
    return math.prod(o) * a["kernel"][0] * a["kernel"][1]


def _strided(a: Attrs) -> bool:
    return max(a["stride"]) > 1


def _flat_input(a: Attrs, i: list[Shape]) -> bool:
    return len(i[0]) == 1


def _kxs(a: Attrs) -> str:
    (kh, kw), (sh, _) = a["kernel"], a["stride"]
    return f"{kh}x{kw}/{sh}"


OPS: dict[str, OpDef] = {op.kind: op for op in [
    OpDef("input", shape=lambda a, i: tuple(a["shape"]), elementwise=lambda a, i, o: 0, latency=_A_STATEMENT),
    OpDef("conv2d", shape=_conv_shape, params=_conv_params, macs=_conv_macs,
          elementwise=lambda a, i, o: 0, window=_conv_window, depth="params", patch=_kxs,
          saves=lambda a, i, o: (("input",), 0),
          latency=Latency(("conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise"), _conv_kernel),
          fuses=frozenset({"affine", "activation", "siblings"}), channels_last=True),
    OpDef("batch_norm2d", shape=_channels_same("batch_norm"), params=_bn_params,
          saves=lambda a, i, o: (("input",), 2 * o[0]),
          latency=_per_map(("batch_norm",), lambda a: "batch_norm", _elements), eval_affine=True),
    # ConvNeXt's LayerNorm2d: each position's channels normalised (F.layer_norm over a channels-last
    # view), then a per-channel scale and shift; the input made contiguous in that layout first (a
    # copy, freed at once), mean and 1 / std per position (kept by autograd)
    # over a sequence, each token's D features (ViT's nn.LayerNorm over the last dimension)
    OpDef("layer_norm2d", shape=lambda a, i: _image_or_sequence("layer_norm", i),
          params=lambda a, i, o: Params(_features(o), _features(o)),
          elementwise=lambda a, i, o: 5 * math.prod(o), workspace=_ln_workspace,
          saves=lambda a, i, o: (("input",), 2 * _positions(o)),
          latency=_per_map(("batch_norm",), lambda a: "batch_norm", _elements)),
    # ConvNeXt's learned per-channel scale of the residual branch, a C x 1 x 1 parameter: its
    # gradient is computed at the map's size before it is summed down
    OpDef("layer_scale", shape=_channels_same("layer_scale"), params=lambda a, i, o: Params(o[0]),
          saves=lambda a, i, o: (("input",), 0), backward_workspace=lambda a, i, o: math.prod(o),
          latency=_per_map(("add",), lambda a: "add", _elements)),
    OpDef("activation", shape=_same("activation"), saves=_saves_activation,
          inplace=lambda a: ACTIVATIONS[a["kind"]].inplace,
          # every activation is timed like the calibrated ReLU: one pass over the map
          latency=_per_map(("relu",), lambda a: "relu", _elements)),
    OpDef("max_pool2d", shape=_pool_shape, window=_pool_window, depth="pooling", patch=_kxs,
          elementwise=_window_elements,
          workspace=lambda a, i, o: 2 * math.prod(o),         # int64 indices, dropped at once in eval
          saves=lambda a, i, o: (("input",), 2 * math.prod(o)),   # ... kept for backward in training
          # the calibration's strided pool is indexed by its input size
          latency=_per_map(("max_pool", "max_pool_s2"), lambda a: "max_pool_s2" if _strided(a) else "max_pool",
                           _window_elements, by_input=_strided)),
    OpDef("avg_pool2d", shape=_pool_shape, window=_pool_window, depth="pooling", patch=_kxs,
          elementwise=_window_elements, saves=lambda a, i, o: (("input",), 0),
          latency=_per_map(("avg_pool",), lambda a: "avg_pool", _window_elements)),
    OpDef("adaptive_avg_pool2d", shape=_adaptive_shape, window=_adaptive_window, depth="pooling",
          elementwise=lambda a, i, o: math.prod(i[0]), saves=lambda a, i, o: (("input",), 0),
          latency=_per_map(("adaptive_pool",), lambda a: "adaptive_pool", lambda a, i, o: math.prod(i[0]),
                           by_input=lambda a: True)),
    OpDef("lrn", shape=_channels_same("lrn"), elementwise=lambda a, i, o: math.prod(o) * a["size"],
          workspace=_lrn_workspace, saves=_saves_lrn,
          latency=_per_map(("lrn",), lambda a: "lrn", lambda a, i, o: math.prod(o) * a["size"])),
    OpDef("dropout", shape=_same("dropout"), saves=lambda a, i, o: ((), math.prod(o)),   # the mask
          alias="eval", latency=_A_STATEMENT),
    # the residual branch times a per-sample 0 or 1 / (1 - p) in training (autograd keeps that
    # noise: one value per sample, or per batch); the branch itself in evaluation
    OpDef("stochastic_depth", shape=_same("stochastic_depth"),
          saves=lambda a, i, o: ((), 1), alias="eval", latency=_A_STATEMENT),
    OpDef("flatten", shape=_flatten_shape, window=_flatten_window, elementwise=lambda a, i, o: 0,
          alias="view", passthrough=_flat_input, grad_passthrough=True, latency=_A_STATEMENT),
    OpDef("linear", shape=_linear_shape, params=_linear_params, depth="params",
          macs=_linear_macs, elementwise=lambda a, i, o: 0,
          saves=lambda a, i, o: (("input",), 0),
          latency=Latency(("linear", "matmul"), _linear_kernel)),
    # ConvNeXt's pointwise layers: nn.Linear over each position's channels (torchvision permutes to
    # channels-last and back); a copy of the input where it is not channels-last already
    OpDef("channel_linear", shape=_channel_linear_shape,
          params=lambda a, i, o: Params(i[0][0] * a["out_features"], a["out_features"] if a["bias"] else 0),
          macs=_channel_linear_macs, elementwise=lambda a, i, o: 0, depth="params",
          saves=lambda a, i, o: (("input",), 0),
          latency=Latency(("conv1x1",), _channel_linear_kernel), channels_last=True),
    OpDef("softmax", shape=_same("softmax"), elementwise=lambda a, i, o: 3 * math.prod(o), probabilities=True),
    OpDef("concat", shape=_concat_shape, join="stack", grad_passthrough=True,
          latency=_per_map(("concat",), lambda a: "concat", _elements)),
    # in place over its first input, as torchvision's blocks do (out += identity): no new map
    OpDef("add", shape=_add_shape, elementwise=lambda a, i, o: (len(i) - 1) * math.prod(o), join="sum",
          inplace=lambda a: True, grad_passthrough=True, latency=_per_map(("add",), lambda a: "add", _elements)),
    # broadcast product (squeeze-and-excitation's gate): autograd keeps both inputs, each the
    # other's gradient factor; timed like the calibrated add (one pass over the map)
    OpDef("mul", shape=_mul_shape, saves=lambda a, i, o: (("input",), 0),
          backward_workspace=lambda a, i, o: sum(math.prod(o) for s in i if tuple(s) != tuple(o)),
          latency=_per_map(("add",), lambda a: "add", _elements)),
    OpDef("identity", shape=_same("identity"), elementwise=lambda a, i, o: 0, alias="view",
          passthrough=lambda a, i: True, grad_passthrough=True, latency=_A_STATEMENT),
    # made by the fuse_siblings pass only: channels [start, end) of its input, a view
    OpDef("channel_slice", shape=_channel_slice_shape, elementwise=lambda a, i, o: 0, alias="view",
          grad_passthrough=True, latency=_A_STATEMENT),
    # ShuffleNetV2's channel split (x.chunk(2, dim=1)[half]): a view of half the channels; its
    # backward builds a gradient of the whole input (zeros where the other half is); with both halves
    # read (ShuffleNetV2), autograd holds two such gradients before it sums them: the transient is
    # one more input (measured; a lone half is overcounted by that much)
    OpDef("channel_split", shape=_channel_split_shape, elementwise=lambda a, i, o: 0, alias="view",
          backward_workspace=lambda a, i, o: math.prod(i[0]), latency=_A_STATEMENT),
    # channel shuffle: a transposed view copied to a new tensor (torchvision's .contiguous()); autograd
    # keeps nothing; timed like the calibrated concat (one copy of the map)
    OpDef("channel_shuffle", shape=_channel_shuffle_shape,
          latency=_per_map(("concat",), lambda a: "concat", _elements)),
    # --- sequences of tokens (ViT) ---
    # torchvision's conv_proj, then flatten(2).transpose(1, 2): the tokens are a view of the conv's map
    OpDef("patch_embed", shape=_patch_shape, params=_patch_params, macs=_patch_macs,
          elementwise=lambda a, i, o: 0, depth="params",
          window=lambda a, i: Window((a["patch"],) * 2, (a["patch"],) * 2, (0, 0)),
          patch=lambda a: f"{a['patch']}x{a['patch']}/{a['patch']}", saves=lambda a, i, o: (("input",), 0),
          latency=Latency(("conv7x7s2",), lambda a, i, o: Kernel("conv7x7s2", (i[0][0], a["out_channels"], i[0][1]),
                                                                 _patch_macs(a, i, o)))),
    # a learned (1, 1, D) token prepended to every sequence: torch.cat copies the sequence
    OpDef("class_token", shape=_class_token_shape, params=lambda a, i, o: Params(o[1])),
    # a learned (1, S, D) position embedding added: its gradient is the output's summed over the batch
    OpDef("pos_embedding", shape=lambda a, i: _sequence("pos_embedding", i), params=lambda a, i, o: Params(o[0] * o[1]),
          grad_passthrough=True),
    # nn.MultiheadAttention (in_proj, scaled dot-product attention, out_proj), as torchvision calls it
    OpDef("self_attention", shape=_attention_shape, params=lambda a, i, o: Params(4 * o[1] ** 2, 4 * o[1]),
          macs=_attention_macs, elementwise=lambda a, i, o: 3 * a["heads"] * o[0] ** 2, depth="params",
          saves=_saves_attention, mixes=True,
          latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]),
                                                                 _attention_macs(a, i, o)))),
    # Swin's (shifted) window attention on the map, as torchvision's ShiftedWindowAttention(V2)
    # computes it on its channels-last view: the score matrices are the windows'
    OpDef("window_attention", shape=_window_attention_shape, params=_window_attention_params,
          macs=_window_attention_macs, elementwise=lambda a, i, o: 3 * _window_scores(a, o), depth="params",
          window=lambda a, i: Window((a["window"],) * 2, (1, 1), ((a["window"] - 1) // 2,) * 2),
          batch_workspace=_window_attention_workspace,
          saves=_window_attention_saves, saves_once=_window_attention_saves_once,
          latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[0], a["heads"], a["window"] ** 2),
                                                                 _window_attention_macs(a, i, o)))),
    # Swin's patch merging: 2 x 2 neighbours concatenated (4C), LayerNorm and a Linear (or V2: the
    # Linear, then the LayerNorm); timed like the 1x1 convolution it is
    OpDef("patch_merging", shape=_patch_merging_shape, params=_patch_merging_params, macs=_patch_merging_macs,
          elementwise=lambda a, i, o: 5 * math.prod(o) * (4 * i[0][0] // o[0] if a["norm"] == "before" else 1),
          depth="params", window=lambda a, i: Window((2, 2), (2, 2), (0, 0)), patch=lambda a: "2x2/2",
          workspace=_patch_merging_workspace,
          saves=lambda a, i, o: (("input",), 2 * math.prod(i[0])),
          latency=Latency(("conv1x1",), lambda a, i, o: Kernel("conv1x1", (4 * i[0][0], o[0], o[1]),
                                                               _patch_merging_macs(a, i, o)))),
    # x[:, index]: one token's features (ViT's class token before the head), a view
    OpDef("select_token", shape=_select_token_shape, elementwise=lambda a, i, o: 0, alias="view",
          latency=_A_STATEMENT),
]}
