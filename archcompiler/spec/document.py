"""The top level of a spec file: header, parameters, blocks, layers, outputs, options.

Layer entries are checked here only for their outer form (a mapping with ``op``, ``use`` or
``table``); each concrete layer is validated by its op's model in :mod:`.layers` once
parameters, block arguments and defaults are substituted.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictInt, field_validator, model_validator

from . import expr
from .base import Strict
from .layers import Bool, Float, Name, NonNegFloat, PosFloat, PosInt, parse_quantity
from .limits import MAX_NAME_CHARS, MAX_STAGES

# Names the generated PyTorch source defines itself: a class may not take one of them.
GENERATED_NAMES = frozenset({"torch", "nn", "F", "Tensor", "Optional", "NamedTuple", "List", "spec_loss",
                             "_log1m_softmax", "check_input", "conv_act", "stochastic_depth", "self", "x"})

LossKind = Literal["cross_entropy", "binary_cross_entropy"]
Scalar = Union[bool, int, float, str]


class Paper(Strict):
    title: str | None = None
    authors: str | None = None
    venue: str | None = None
    year: int | None = None
    url: str | None = None
    table: str | int | None = Field(None, description="the table of the paper this spec transcribes")


class BlockDef(Strict):
    """A reusable group of layers with named arguments (an inception module)."""

    doc: str | None = None
    args: list[str] | dict[str, Scalar] = Field(
        default_factory=list, description="argument names, or a mapping of names to defaults")
    layers: Annotated[list[dict[str, Any]], Field(min_length=1)]
    output: str | None = Field(None, description="the layer whose result the block returns; default: the last")
    stride: str = Field("stride", description="the argument that a repeated row's later instances set to 1 "
                        "(MobileNetV2's 's'); default: 'stride'")

    @model_validator(mode="after")
    def _stride_is_an_argument(self) -> BlockDef:
        if self.stride != "stride" and self.stride not in self.arg_names():
            raise ValueError(f"stride names {self.stride!r}, which is not one of the block's arguments "
                             f"({', '.join(self.arg_names()) or 'none'})")
        return self

    def arg_defaults(self) -> dict[str, Any]:
        return {} if isinstance(self.args, list) else dict(self.args)

    def arg_names(self) -> list[str]:
        return list(self.args)


class BlockUse(Strict):
    """``{name: aux1, use: aux_classifier, input: inception_4a, args: {...}}``"""

    name: Name
    use: str = Field(description="a block's name, or a parameter (or variant row) whose value is one")
    input: str | None = None
    args: dict[str, Scalar] = Field(default_factory=dict, description="the block's arguments; expressions "
                                    "of the parameters, and inside a block of its arguments and its input's "
                                    "shape (in_channels, in_height, in_width)")
    claims: dict[str, Any] | None = None
    doc: str | None = None
    repeat: StrictInt | str | None = Field(None, description="instances in a row (the paper's 'x3'): the first "
                                     "takes the arguments as given, the others stride 1")
    when: bool | str | None = Field(None, description="an expression: the block exists only where it is true; "
                                    "where it is false, what reads it reads its input")


class Table(Strict):
    """Rows of block instances, one per line, with the paper's columns."""

    use: str = Field(description="the block each list row instantiates")
    columns: Annotated[list[str], Field(min_length=1)] = Field(
        description="'name', the block's arguments, and claim columns output / params / ops / depth")
    rows: Annotated[list[list[Scalar] | dict[str, Any]], Field(min_length=1)] = Field(
        description="a list per block instance, in column order; a mapping is an ordinary layer")
    repeat: str = Field("repeat", description="the column that holds each row's repeat count (the paper's "
                        "'n'), or an expression over the columns and the parameters that gives it "
                        "(EfficientNet's depth scaling: 'ceil(n * depth_mult)'); default: 'repeat'")

    @field_validator("columns")
    @classmethod
    def _has_name(cls, v: list[str]) -> list[str]:
        if "name" not in v:
            raise ValueError("a table needs a 'name' column")
        if len(set(v)) != len(v):
            raise ValueError("column names must be unique")
        return v

    @model_validator(mode="after")
    def _repeat_is_a_column(self) -> Table:
        if self.repeat.isidentifier():
            if self.repeat != "repeat" and self.repeat not in self.columns:
                raise ValueError(f"repeat names {self.repeat!r}, which is not one of the columns "
                                 f"({', '.join(self.columns)})")
            return self
        try:
            named = expr.names(self.repeat)
        except expr.ExprError as exc:
            raise ValueError(str(exc)) from None
        if not named & set(self.columns):
            raise ValueError(f"repeat {self.repeat!r} names none of the columns ({', '.join(self.columns)}); "
                             f"a row's count is a column, or an expression over one")
        return self

    def count_columns(self) -> set[str]:
        """The columns that give a row's repeat count (not block arguments): the ``repeat`` column, or
        the columns its expression names."""
        if self.repeat.isidentifier():
            return {self.repeat}
        return expr.names(self.repeat) & set(self.columns)


class Variants(Strict):
    """A paper's table of variants (ResNet's Table 1: 18 to 152 layers): one column per variant,
    one row per value that differs; the parameter ``by`` chooses the column and each row becomes a
    parameter with that column's value."""

    by: str = Field(description="the parameter whose value names the column (ResNet: depth)")
    columns: Annotated[list[Scalar], Field(min_length=1)] = Field(description="the variants, in the paper's order")
    rows: Annotated[dict[str, list[Scalar]], Field(min_length=1)] = Field(
        description="name: one value per column (a number, or a word such as a block's name)")

    @field_validator("columns")
    @classmethod
    def _unique(cls, v: list[Any]) -> list[Any]:
        if len(set(map(repr, v))) != len(v):
            raise ValueError("the variants' columns must be unique")
        return v


class TableItem(Strict):
    table: Table


class OutputDef(Strict):
    """A model output with its loss: ``{layer: prob, loss: cross_entropy, weight: 1}``."""

    layer: str
    loss: LossKind | None = Field(None, description="default: the spec's 'loss'")
    weight: NonNegFloat = 1.0
    training_only: Bool = Field(False, description="computed in training mode only (auxiliary heads)")


class InitRule(Strict):
    """How the weights of one op kind are initialised (``conv``, ``linear``, ``batch_norm``)."""

    kind: Literal["default", "normal", "trunc_normal", "xavier_uniform", "xavier_normal",
                  "kaiming_normal", "kaiming_uniform", "constant"] = "default"
    mean: Float = 0.0
    std: PosFloat = 0.01
    a: Float = Field(-2.0, description="trunc_normal: lower cut-off")
    b: Float = Field(2.0, description="trunc_normal: upper cut-off")
    value: Float = Field(1.0, description="constant: the weight value")
    bias: Float | None = Field(None, description="constant bias; default: the op's own default")

    @model_validator(mode="after")
    def _cut_offs(self) -> InitRule:
        if self.kind == "trunc_normal" and not self.a < self.b:
            raise ValueError(f"trunc_normal needs a < b (got a={self.a}, b={self.b})")
        return self


class ClaimUnits(Strict):
    """What the paper's K / M / G mean: 1000 (decimal) or 1024 (binary)."""

    params: Literal["decimal", "binary"] = "decimal"
    ops: Literal["decimal", "binary"] = "decimal"


class TorchOptions(Strict):
    class_name: str | None = Field(None, description="name of the generated nn.Module class (a Python "
                                   "identifier)")
    rename: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list,
        description="[regex, replacement] pairs applied in order to each layer's path "
                    "(inception_3a/1x1) to give its module path in state_dict; a replacement's "
                    "{expression} over index numbers the distinct texts the pattern matches, in network "
                    "order (features.{index}, as nn.Sequential numbers its modules)")
    returns: Literal["tuple", "dict"] = Field(
        "tuple", description="how forward() gives the outputs: 'tuple' (the main output alone where it is the "
        "only one in this mode, else a named tuple, as torchvision's GoogLeNet) or 'dict' (always a dict of "
        "output name to tensor, as torchvision's segmentation models: model(x)['out'])")

    @field_validator("class_name")
    @classmethod
    def _class_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", v) or len(v) > MAX_NAME_CHARS or keyword.iskeyword(v):
            raise ValueError(f"{v[:60]!r} is not a class name: use letters, digits and _, starting with a letter")
        if v in GENERATED_NAMES:
            raise ValueError(f"{v!r} is a name the generated code uses itself; choose another")
        return v

    @field_validator("rename")
    @classmethod
    def _patterns(cls, v: list[list[str]]) -> list[list[str]]:
        from .rename import check_pattern
        for pattern, replacement in v:
            check_pattern(pattern, replacement)
        return v


class TrainOptions(Strict):
    """The training recipe (``archc train``): every field is a default that a flag overrides."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PosFloat = Field(0.01, description="learning rate")
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(0.9, description="sgd only")
    nesterov: Bool = Field(False, description="sgd only")
    weight_decay: NonNegFloat = 0.0
    schedule: Literal["none", "step", "cosine"] = Field(
        "none", description="step: lr x step_factor every step_every epochs (the paper: 0.96 every 8); "
                            "cosine: to 0 over the epochs")
    step_every: PosInt = Field(8, description="epochs between steps of the 'step' schedule")
    step_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        0.96, description="lr multiplier at each step (0.96: 'decrease the learning rate by 4%')")
    epochs: Annotated[PosInt, Field(le=100_000)] = 10
    batch_size: Annotated[PosInt, Field(le=1_000_000)] = 32
    label_smoothing: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0


class DataOptions(Strict):
    """Preprocessing and augmentation of images (what timm calls a pretrained config); saved with
    every checkpoint, so ``archc predict`` prepares images exactly as training did."""

    resize: PosInt | None = Field(None, description="shorter side before the center crop; default: crop / 0.875")
    crop: PosInt | None = Field(None, description="square crop fed to the network; default: the spec's input size")
    mean: Annotated[list[Float], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: [0.485, 0.456, 0.406], description="per channel, for pixels in [0, 1]")
    std: Annotated[list[PosFloat], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    random_resized_crop: Bool = Field(True, description="training: a random crop of 8%-100% of the area, "
                                      "aspect ratio 3/4-4/3 (as the paper's 'various sized patches')")
    min_scale: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        0.08, description="the smallest crop area for random_resized_crop")
    horizontal_flip: Bool = Field(True, description="training: flip half the images")


class Edit(Strict):
    """One change to an inherited spec's layers (or, with ``block``, to a block's layers)."""

    block: str | None = Field(None, description="edit this block's layers instead of the spec's")
    layer: str | None = Field(None, description="with 'set': the layer (or table row) to change")
    set: dict[str, Any] | None = Field(None, description="keys to change in 'layer'")
    delete: str | None = Field(None, description="remove this layer (or table row)")
    replace: str | None = Field(None, description="replace this layer by 'layers'")
    insert_before: str | None = None
    insert_after: str | None = None
    layers: list[dict[str, Any]] | None = Field(None, description="layers to insert / replace with")

    def action(self) -> str:
        given = [k for k in ("set", "delete", "replace", "insert_before", "insert_after")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an edit does exactly one of: set (with layer), delete, replace, "
                             "insert_before, insert_after")
        return given[0]


ClaimValue = Union[str, Annotated[int, Field(ge=0)]]


class NetworkClaims(Strict):
    """The paper's numbers for the whole network (its results table: ConvNeXt-T 28M params, 4.5G
    multiply-adds): each a quantity (``28M``), or a list of them, one per column of ``variants``."""

    params: ClaimValue | list[ClaimValue | None] | None = Field(
        None, description="parameters, e.g. 28M; in a list, null where the paper prints none for a column")
    ops: ClaimValue | list[ClaimValue | None] | None = Field(
        None, description="multiply-adds, e.g. 4.5G; in a list, null where the paper prints none for a column")
    input: Annotated[list[PosInt], Field(min_length=3, max_length=3)] | None = Field(
        None, description="C, H, W the paper counted its ops at, when not the spec's input (SwinV2's models: "
                          "[3, 256, 256], where torchvision's builders default to 224)")

    @field_validator("params", "ops")
    @classmethod
    def _quantities(cls, v: Any) -> Any:
        for value in v if isinstance(v, list) else [v]:
            if value is not None:
                parse_quantity(value)       # every column's, not only the chosen one's
        return v


class Document(Strict):
    """A spec file (after ``extends`` and overrides are merged in)."""

    name: Name
    description: str = ""
    paper: Paper | None = None
    extends: str | None = Field(None, description="path of the spec this one changes (relative to this file)")
    edits: list[Edit] = Field(default_factory=list, description="changes to the inherited layers, in order")
    keep_claims: Bool = Field(False, description="with extends: keep the parent's claims (by default a "
                                                 "variant drops them: they describe the paper)")
    input: Annotated[list[Union[PosInt, str]], Field(min_length=3, max_length=4)] = Field(
        description="C, H, W: numbers, or expressions of the parameters (EfficientNet: [3, resolution, resolution]); "
                    "a clip's C, T, H, W (video: [3, 16, 112, 112])")
    params: dict[str, Scalar] = Field(default_factory=dict)
    builders: dict[Name, dict[Name, Union[Scalar, NetworkClaims]]] = Field(
        default_factory=dict, description="names a user can give instead of the file (torchvision's builders: "
        "resnet101), each with the parameters it sets, as --set would, and optionally `claims:`, its own "
        "paper's numbers (ResNeXt-50's in the ResNet spec)")
    variants: Variants | None = Field(None, description="a table of the paper's variants; a parameter "
                                      "chooses the column")
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-op default fields")
    blocks: dict[str, BlockDef] = Field(default_factory=dict)
    layers: Annotated[list[dict[str, Any]], Field(min_length=1)]
    outputs: dict[str, OutputDef] = Field(default_factory=dict, description="default: the last layer, as 'main'")
    stages: Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]],
                      Field(max_length=MAX_STAGES)] = Field(
        default_factory=list, description="the network's stages, in order, as `features:` indexes them (timm's "
        "feature_info): rows, block instances (layers/3) or every instance of a repeated row (layers/*); default: "
        "the last row at each reduction of the image")
    features: Annotated[list[Union[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)],
                                    Annotated[StrictInt, Field(ge=-MAX_STAGES, le=MAX_STAGES)]]],
                        Field(max_length=MAX_STAGES)] = Field(
        default_factory=list, description="make the network a feature extractor: it returns these layers' "
        "outputs (a dict, as torchvision's IntermediateLayerGetter), each a C x H x W map, and drops what follows "
        "them; a layer's name (the spec's, conv3_x, or its torch module's, layer2) or a stage index (timm's "
        "out_indices; -1 the last stage)")
    loss: LossKind = "cross_entropy"
    init: dict[str, InitRule] = Field(default_factory=dict)
    claim_units: ClaimUnits = Field(default_factory=ClaimUnits)
    claims: NetworkClaims | None = Field(None, description="the paper's numbers for the whole network "
                                         "(params, ops): each a quantity, or one per column of 'variants'")
    torch: TorchOptions = Field(default_factory=TorchOptions)
    train: TrainOptions = Field(default_factory=TrainOptions, description="the training recipe (archc train)")
    data: DataOptions = Field(default_factory=DataOptions, description="image preprocessing and augmentation")


def schema_model() -> type[Document]:
    """Only for ``archc schema``: the document with its layer list spelled out, so editors can
    complete it (built on demand: building it compiles every layer model)."""

    from ..ops import registry

    models = tuple(dict.fromkeys(lay.model for lay in registry().layers.values()))     # each once, in order
    any_layer = Union[models]  # type: ignore[valid-type]  # noqa: UP007   (a Union of the tuple's members)

    class SchemaDocument(Document):
        layers: list[Union[any_layer, BlockUse, TableItem]]  # type: ignore[assignment, valid-type]

    return SchemaDocument
