"""The layer vocabulary of the spec language: one pydantic model per ``op``.

These models validate *concrete* layers, after parameters, block arguments, table cells and
defaults have been substituted (see :mod:`archcompiler.spec.resolve`).  Each model's fields are
the YAML keys of that op, so the JSON Schema of the format is generated from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BeforeValidator, Field, StrictBool, field_validator, model_validator

from .base import Strict
from .limits import MAX_DIM, MAX_NAME_CHARS


def _not_bool(value: Any) -> Any:
    """YAML's ``true`` is not the number 1: a boolean where a number belongs is an error."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean; a number is needed here")
    return value


# Numbers: never booleans; whole numbers within what torch can index; floats finite.
PosInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=MAX_DIM)]
NonNegInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=MAX_DIM)]
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
PosFloat = Annotated[float, BeforeValidator(_not_bool), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, allow_inf_nan=False)]
Bool = StrictBool
Pair = Union[PosInt, Annotated[list[PosInt], Field(min_length=2, max_length=2)]]
NonNegPair = Union[NonNegInt, Annotated[list[NonNegInt], Field(min_length=2, max_length=2)]]
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]

# The activations of the spec language (``act:`` and ``op:``); the IR's op table says what each does
# (archcompiler.ir.ops.ACTIVATIONS).
ActivationKind = Literal["relu", "relu6", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "hardswish", "hardsigmoid"]
Activation = Literal[ActivationKind, "none"]
ACTIVATIONS: tuple[str, ...] = get_args(ActivationKind)

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_QTY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)\s*$")
_PREFIX = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``[3, 5]`` -> ``(3, 5)``."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def parse_quantity(text: str | int | float, base: int = 1000) -> float:
    """``'159K'`` -> 159 * base, ``'1.5G'`` -> 1.5 * base**3; plain numbers pass through."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _QTY.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a quantity like 159K, 34M or 1.5G")
    return float(m.group(1)) * base ** _PREFIX[m.group(2).lower()]


class Claims(Strict):
    """What the paper says about a row: checked by ``archc check`` against computed values."""

    output: str | None = Field(None, description="output size as the paper prints it: HxWxC, e.g. 28x28x256")
    params: str | NonNegInt | None = Field(None, description="parameters, e.g. 159K")
    ops: str | NonNegInt | None = Field(None, description="multiply-adds, e.g. 128M")
    depth: NonNegInt | None = Field(None, description="layers with parameters in the row")

    @field_validator("output")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not _SIZE.match(v):
            raise ValueError(f"{v!r} is not an output size like 28x28x256 (H x W x C)")
        return v

    @field_validator("params", "ops")
    @classmethod
    def _qty(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_quantity(v)
        return v

    def output_chw(self) -> tuple[int, int, int] | None:
        if self.output is None:
            return None
        h, w, c = (int(g) for g in _SIZE.match(self.output).groups())
        return c, h, w


class BatchNormSpec(Strict):
    kind: Literal["batch_norm"] = "batch_norm"
    eps: PosFloat = 1e-5
    momentum: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)] = 0.1


class LayerBase(Strict):
    """Fields every layer has."""

    op: str
    name: Name = Field(description="unique name; other layers refer to it")
    input: str | None = Field(None, description="the layer this one reads; default: the previous one")
    claims: Claims | None = None
    doc: str | None = Field(None, description="free text, shown in tables and diagrams")
    when: Bool | str | None = Field(None, description="a condition over the block's arguments, the parameters, "
                                    "i and N and the block's input (in_channels, in_height, in_width): the layer "
                                    "exists only where it holds; where it does not, what reads it reads its input")

    n_inputs: ClassVar[str] = "one"  # "one" or "many"

    def input_names(self) -> list[str] | None:
        return None if self.input is None else [self.input]


class ManyInputs(LayerBase):
    n_inputs: ClassVar[str] = "many"
    inputs: Annotated[list[str], Field(min_length=2)] = Field(description="the layers to combine")

    @model_validator(mode="before")
    @classmethod
    def _no_single_input(cls, data: Any) -> Any:
        if isinstance(data, dict) and "input" in data:
            raise ValueError("this op combines several layers: use 'inputs: [a, b, ...]', not 'input'")
        return data

    def input_names(self) -> list[str]:
        return list(self.inputs)


class Conv(LayerBase):
    """2-D convolution, optionally followed by a normalisation and an activation."""

    op: Literal["conv"]
    out: PosInt = Field(description="output channels")
    kernel: Pair
    stride: Pair = 1
    padding: NonNegPair | Literal["same", "valid"] = 0
    dilation: Pair = 1
    groups: PosInt = 1
    bias: Bool | None = Field(None, description="default: true, false when 'norm' is set")
    norm: Literal["batch_norm"] | BatchNormSpec | None = None
    act: Activation = "none"

    @model_validator(mode="after")
    def _same_stride(self) -> Conv:
        if self.padding == "same" and pair(self.stride) != (1, 1):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch); give the padding as a number")
        return self

    def norm_spec(self) -> BatchNormSpec | None:
        if self.norm is None:
            return None
        return BatchNormSpec() if isinstance(self.norm, str) else self.norm

    def has_bias(self) -> bool:
        return self.norm is None if self.bias is None else self.bias


class _Pool(LayerBase):
    kernel: Pair
    stride: Pair | None = Field(None, description="default: the kernel size")
    padding: NonNegPair = 0
    ceil_mode: Bool = False

    @model_validator(mode="after")
    def _pad_le_half_kernel(self) -> _Pool:
        k, p = pair(self.kernel), pair(self.padding)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"padding {self.padding} is more than half the kernel {self.kernel} "
                             "(PyTorch refuses this)")
        return self

    def stride_pair(self) -> tuple[int, int]:
        return pair(self.kernel if self.stride is None else self.stride)


class MaxPool(_Pool):
    op: Literal["max_pool"]


class AvgPool(_Pool):
    op: Literal["avg_pool"]
    count_include_pad: Bool = True


class AdaptiveAvgPool(LayerBase):
    op: Literal["adaptive_avg_pool"]
    output: Pair = Field(description="output height and width")


class GlobalAvgPool(LayerBase):
    op: Literal["global_avg_pool"]


class LRN(LayerBase):
    """Local response normalisation across channels (AlexNet, GoogLeNet)."""

    op: Literal["lrn"]
    size: PosInt = 5
    alpha: Float = 1e-4
    beta: Float = 0.75
    k: PosFloat = Field(1.0, description="additive constant, > 0")


class BatchNorm(LayerBase):
    op: Literal["batch_norm"]
    eps: PosFloat = 1e-5
    momentum: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)] = 0.1


class Act(LayerBase):
    """A stand-alone activation: ``op: relu`` (or sigmoid, tanh, ...)."""

    op: ActivationKind


class Dropout(LayerBase):
    op: Literal["dropout"]
    p: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, lt=1)] = Field(
        0.5, description="drop probability, in [0, 1)")


class StochasticDepth(LayerBase):
    """Stochastic depth (Huang et al. 2016; torchvision.ops.StochasticDepth) on a residual branch: in
    training each sample's branch (mode ``row``; ``batch``: the whole batch's) is dropped with
    probability ``p`` and what survives is scaled by 1 / (1 - p); the identity in evaluation.
    EfficientNet's rate grows with the block's position: ``p: "0.2 * i / N"``."""

    op: Literal["stochastic_depth"]
    p: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)] = Field(
        description="drop probability, in [0, 1]")
    mode: Literal["row", "batch"] = Field("row", description="row: per sample (torchvision's default in its "
                                                             "models); batch: the whole batch at once")


class Flatten(LayerBase):
    op: Literal["flatten"]


class Linear(LayerBase):
    """Fully connected layer; a C x H x W input is flattened first, or, with ``over: channels``, the
    same Linear maps each position's channels (ConvNeXt's pointwise layers: nn.Linear on a
    channels-last image) and the output is an image of ``out`` channels; with ``over: tokens`` it maps
    each token of a sequence (a transformer's MLP: S x D to S x out)."""

    op: Literal["linear"]
    out: PosInt = Field(description="output features")
    bias: Bool = True
    act: Activation = "none"
    over: Literal["flat", "channels", "tokens"] = Field(
        "flat", description="flat: the input flattened first; channels: each position's channels (an image stays "
                            "one); tokens: each token's features (a sequence stays one)")


class LayerNorm(LayerBase):
    """LayerNorm over an image's channels at each position (ConvNeXt's LayerNorm2d: nn.LayerNorm on
    the channels-last view), or over each token's features of a sequence (a transformer's
    nn.LayerNorm over the last dimension), with a learned per-feature scale and shift."""

    op: Literal["layer_norm"]
    eps: PosFloat = 1e-5


class LayerScale(LayerBase):
    """A learned per-channel scale, a C x 1 x 1 parameter that multiplies the map (ConvNeXt's
    residual branch, torchvision's ``layer_scale``)."""

    op: Literal["layer_scale"]
    init: PosFloat = Field(1e-6, description="the scale's initial value (ConvNeXt: 1e-6)")


class Softmax(LayerBase):
    """Softmax over channels. A final softmax is the model's probability output: the torch
    backend applies it in ``predict_proba`` and trains on the logits before it."""

    op: Literal["softmax"]


class Concat(ManyInputs):
    """Concatenation along channels (an inception module's output)."""

    op: Literal["concat"]


class Add(ManyInputs):
    """Element-wise sum (a residual connection), optionally followed by an activation."""

    op: Literal["add"]
    act: Activation = "none"


class Mul(ManyInputs):
    """Element-wise product of two inputs that broadcast (squeeze-and-excitation: a feature map
    times a C x 1 x 1 gate)."""

    op: Literal["mul"]
    inputs: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description="the two layers to multiply")


class Identity(LayerBase):
    op: Literal["identity"]


class ChannelSplit(LayerBase):
    """ShuffleNetV2's channel split (torch's ``x.chunk(2, dim=1)``): one half of the input's channels,
    a view; the input must have an even number of channels."""

    op: Literal["channel_split"]
    half: Literal["first", "second"] = Field(description="which half of the channels: 'first' or 'second'")


class ChannelShuffle(LayerBase):
    """ShuffleNet's channel shuffle: the channels, seen as groups x (C / groups), transposed to
    (C / groups) x groups, so that each group of the next grouped layer reads every group of this one."""

    op: Literal["channel_shuffle"]
    groups: PosInt = Field(description="the number of groups (ShuffleNetV2: 2); it must divide the channels")


class PatchEmbed(LayerBase):
    """ViT's patch embedding: the image cut into ``patch`` x ``patch`` patches, each mapped to ``out``
    features (torchvision's ``conv_proj``, a p x p convolution of stride p, flattened and transposed):
    a C x H x W image becomes a sequence of (H / p) x (W / p) tokens of ``out`` features."""

    op: Literal["patch_embed"]
    out: PosInt = Field(description="features per token (ViT's hidden size D)")
    patch: PosInt = Field(description="the patch's side in pixels; it must divide the image's height and width")
    bias: Bool = True


class ClassToken(LayerBase):
    """A learned token of the sequence's dimension, prepended to it (ViT's ``class_token``, a
    (1, 1, D) parameter): S tokens become S + 1."""

    op: Literal["class_token"]


class PosEmbedding(LayerBase):
    """A learned position embedding added to the sequence (ViT's ``pos_embedding``, a (1, S, D)
    parameter): its length follows the sequence's, and so the image size and the patch."""

    op: Literal["pos_embedding"]


class SelfAttention(LayerBase):
    """Multi-head self-attention over a sequence, laid out as torch's ``nn.MultiheadAttention``
    (``in_proj_weight`` / ``in_proj_bias`` for q, k and v, ``out_proj``), so torchvision's keys load;
    ``heads`` must divide the sequence's dimension."""

    op: Literal["self_attention"]
    heads: PosInt = Field(description="attention heads; each attends over dim / heads features")
    dropout: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, lt=1)] = Field(
        0.0, description="dropout on the attention weights in training, in [0, 1)")


class SelectToken(LayerBase):
    """One token of a sequence, its features as a flat vector (ViT's ``x[:, 0]``: the class token
    before the head)."""

    op: Literal["select_token"]
    index: NonNegInt = Field(0, description="which token, from 0 (the class token)")


class WindowAttention(LayerBase):
    """Swin's (shifted) window multi-head self-attention over an image's positions: the map cut into
    ``window`` x ``window`` windows (after a cyclic shift of ``shift`` positions), each a sequence
    of window^2 tokens attending among themselves with a learned relative position bias, laid out as
    torchvision's ``ShiftedWindowAttention`` (``qkv``, ``proj``, ``relative_position_bias_table``
    and the integer buffer ``relative_position_index``); ``cosine``: Swin V2's scaled cosine
    attention (``logit_scale``) with the continuous position bias of a small MLP (``cpb_mlp``).
    ``grid``: MaxViT's grid attention (``layout: maxvit`` its torchvision module). The window must
    tile the map (or ``pad`` pads it) and ``heads`` divide the channels."""

    op: Literal["window_attention"]
    heads: PosInt = Field(description="attention heads; each attends over channels / heads features")
    window: PosInt = Field(description="the window's side in positions (Swin: 7, Swin V2: 8); it must tile the map")
    shift: NonNegInt = Field(0, description="the cyclic shift of the shifted windows (window // 2), 0 for "
                                           "regular windows; none where the window covers the whole map")
    pad: Bool = Field(False, description="pad the map with zeros to a multiple of the window first and crop "
                                         "the result (torchvision's); without it the window must tile the map")
    cosine: Bool = Field(False, description="Swin V2's scaled cosine attention and continuous position bias")
    grid: Bool = Field(False, description="MaxViT's grid attention: each group a window x window grid of positions "
                                          "H / window apart across the map, instead of a window of neighbours")
    layout: Literal["swin", "maxvit"] = Field("swin", description="the torchvision module it is laid out as: Swin's "
                                              "ShiftedWindowAttention (qkv, proj; q scaled by head_dim^-0.5) or "
                                              "MaxViT's RelativePositionalMultiHeadAttention (to_qkv, merge, a 2D "
                                              "index; k scaled by C^-0.5)")
    dropout: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, lt=1)] = Field(
        0.0, description="dropout on the attention weights in training, in [0, 1)")


class PatchMerging(LayerBase):
    """Swin's patch merging: each 2 x 2 group of positions concatenated (4C channels at half the
    height and width, an odd side padded with zeros as torchvision does), then a LayerNorm and a
    Linear to ``out`` channels without bias (torchvision's ``reduction`` and ``norm``); ``norm:
    after`` normalises the ``out`` channels after the Linear instead (Swin V2)."""

    op: Literal["patch_merging"]
    out: PosInt | None = Field(None, description="output channels (default: twice the input's)")
    norm: Literal["before", "after"] = Field("before", description="the LayerNorm before the reduction "
                                                                   "(Swin) or after it (Swin V2)")
    eps: PosFloat = 1e-5


OPS: dict[str, type[LayerBase]] = {}
# every layer model, in the order the schema lists them (a new op adds its model here, once)
LAYER_MODELS = (Conv, MaxPool, AvgPool, AdaptiveAvgPool, GlobalAvgPool, LRN, BatchNorm, Act, Dropout, StochasticDepth,
                Flatten, Linear, LayerNorm, LayerScale, Softmax, Concat, Add, Mul, Identity, ChannelSplit, ChannelShuffle,
                PatchEmbed, ClassToken, PosEmbedding, SelfAttention, SelectToken, WindowAttention, PatchMerging)
for _model in LAYER_MODELS:
    for _op in _model.model_fields["op"].annotation.__args__:
        OPS[_op] = _model

AnyLayer = Union[LAYER_MODELS]  # noqa: UP007   (a Union of the tuple's members)
