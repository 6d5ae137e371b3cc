"""The resolved spec: what the rest of the pipeline consumes.

Every block and table row is expanded into concrete, validated layers with hierarchical names
(``inception_3a/3x3_reduce``); parameters and expressions are evaluated; every layer keeps the
source location it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Location
from ..util import shape_text
from .document import ClaimUnits, DataOptions, InitRule, Paper, TorchOptions, TrainOptions
from .layers import Claims, LayerBase


@dataclass(frozen=True)
class Layer:
    """One concrete layer of the network."""

    name: str                      # hierarchical: "inception_3a/3x3_reduce"
    spec: LayerBase                # the validated op model (Conv, MaxPool, ...)
    inputs: tuple[str, ...]        # hierarchical names of the layers it reads ("input" = the image)
    group: str | None              # innermost block instance ("inception_3a"), None at top level
    row: str                       # the top-level row it belongs to ("inception_3a", "conv1")
    loc: Location
    field_locs: dict[str, Location] = field(default_factory=dict, compare=False)

    @property
    def op(self) -> str:
        return self.spec.op


@dataclass(frozen=True)
class Instance:
    """One use of a block: a table row or a ``use:`` layer."""

    name: str
    block: str
    args: dict[str, Any]
    output: str                    # hierarchical name of the layer it returns
    claims: Claims | None
    loc: Location
    parent: str | None = None
    from_table: bool = False


@dataclass(frozen=True)
class Output:
    name: str
    layer: str                     # hierarchical name
    loss: str
    weight: float
    training_only: bool
    loc: Location


@dataclass(frozen=True)
class Choice:
    """An entry of ``stages:`` or ``features:`` as written (a name or a stage index), with its place."""

    value: str | int
    loc: Location


@dataclass
class Spec:
    """A fully resolved, validated spec."""

    name: str
    description: str
    paper: Paper | None
    input: tuple[int, int, int]
    params: dict[str, Any]
    layers: list[Layer]
    instances: dict[str, Instance]
    rows: list[str]                # top-level row names, in the order written
    outputs: dict[str, Output]
    loss: str
    init: dict[str, InitRule]
    claim_units: ClaimUnits
    torch: TorchOptions
    file: str
    train: TrainOptions = field(default_factory=TrainOptions)
    data: DataOptions = field(default_factory=DataOptions)
    stages: list[Choice] = field(default_factory=list)       # as written: the features pass reads them
    features: list[Choice] = field(default_factory=list)     # empty: the network's own outputs
    document: Any = field(repr=False, default=None)   # the merged YAML data (YDict), for resolve / embedding
    claims: Claims | None = None       # the paper's numbers for the whole network (this variant's)
    claims_locs: dict[str, Location] = field(default_factory=dict)   # where each of them is written
    claims_input: tuple[int, ...] | None = None     # the input the paper counted its ops at, when not `input`

    def layer(self, name: str) -> Layer:
        index = self.__dict__.get("_index")
        if index is None or len(index) != len(self.layers):
            index = self.__dict__["_index"] = {layer.name: layer for layer in self.layers}
        return index[name]

    def built_columns(self, instance: str) -> dict[str, Any]:
        """A table row's columns as built: a column named like a layer of the block (``1x1``,
        ``3x3_reduce``, ``pool_proj``) shows that layer's channel count after expressions such as
        ``round_to(1x1 * width, 8)``; other columns show the value written. (The paper's own
        numbers stay in the spec and in its claims.)"""
        inst = self.instances[instance]
        out: dict[str, Any] = {}
        for arg, value in inst.args.items():
            try:
                layer = self.layer(f"{instance}/{arg}")
            except KeyError:
                out[arg] = value
                continue
            out[arg] = getattr(layer.spec, "out", value)
        return out

    def row_claims(self, row: str) -> Claims | None:
        if row in self.instances:
            return self.instances[row].claims
        try:
            return self.layer(row).spec.claims
        except KeyError:
            return None

    def summary(self) -> str:
        n_conv = sum(1 for layer in self.layers if layer.op in ("conv", "conv3d", "linear"))
        return (f"{self.name}: {len(self.layers)} layers ({n_conv} conv/linear) in {len(self.rows)} rows, "
                f"input {shape_text(self.input)}, outputs: {', '.join(self.outputs)}")
