"""The activations: ``op: relu`` (sigmoid, tanh, ...) as a layer, and ``act:`` of conv, linear and add."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..spec.layers import LayerBase
from ._base import Attrs, FromOnnx, FromTorch, LayerOp, Op, OpDef, Prim, Style, TorchCode, elements, need, per_map, same

KIND = "activation"
# The activations of the spec language (``act:`` and ``op:``)
ActivationKind = Literal["relu", "relu6", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "hardswish", "hardsigmoid"]
Activation = Literal[ActivationKind, "none"]


@dataclass(frozen=True)
class ActivationDef:
    """One kind of the ``activation`` op (``attrs["kind"]``): what autograd saves for its backward
    pass (``"input"`` or ``"output"``: the tensor it differentiates from), whether PyTorch computes it
    in place (as torchvision's modules do: ``nn.ReLU(inplace=True)``, ``nn.Hardswish(inplace=True)``),
    whether ``--optimize`` fuses it into the convolution before it (oneDNN's post-op), its torch call."""

    kind: str
    saves: Literal["input", "output"]
    torch: str
    inplace: bool = False
    fusable: bool = False


ACTIVATIONS: dict[str, ActivationDef] = {a.kind: a for a in [
    ActivationDef("relu", "output", "F.relu({x}, inplace={inplace})", inplace=True, fusable=True),
    ActivationDef("relu6", "input", "F.relu6({x}, inplace={inplace})", inplace=True),   # hardtanh_: autograd clones the input
    ActivationDef("leaky_relu", "output", "F.leaky_relu({x}, inplace={inplace})", inplace=True),
    ActivationDef("sigmoid", "output", "torch.sigmoid({x})"),
    ActivationDef("tanh", "output", "torch.tanh({x})"),
    ActivationDef("gelu", "input", "F.gelu({x})"),
    ActivationDef("silu", "input", "F.silu({x}, inplace={inplace})", inplace=True),
    ActivationDef("hardswish", "input", "F.hardswish({x}, inplace={inplace})", inplace=True),   # nn.Hardswish(inplace=True)
    ActivationDef("hardsigmoid", "input", "F.hardsigmoid({x})"),                             # nn.Hardsigmoid()
]}
assert set(ACTIVATIONS) == set(get_args(ActivationKind))


class Act(LayerBase):
    """A stand-alone activation: ``op: relu`` (or relu6, leaky_relu, sigmoid, tanh, gelu, silu,
    hardswish, hardsigmoid)."""

    op: ActivationKind


def lower_act(kind: str) -> list[Prim]:
    """The activation a layer's ``act:`` adds after its main op (none for ``none``)."""
    return [] if kind == "none" else [(f"/{kind}", KIND, {"kind": kind})]


def _act_in(kind: str) -> Callable[[Any], dict]:
    def layer(s: Any) -> dict:
        slope = s.arg.get("negative_slope", getattr(s.module, "negative_slope", 0.01))
        need(slope == 0.01, f"negative_slope {slope} (archc's leaky_relu has PyTorch's default, 0.01)")
        approx = s.arg.get("approximate", getattr(s.module, "approximate", "none"))
        need(approx == "none", f"approximate={approx!r} (archc's gelu is the exact one)")
        return {"op": kind}
    return layer


def _clip(n: Any) -> dict:
    lo, hi = (n.consts + [None, None, None])[1:3]
    lo = float(lo) if lo is not None else n.attrs.get("min")
    hi = float(hi) if hi is not None else n.attrs.get("max")
    need(lo == 0 and hi == 6, f"Clip({lo}, {hi}) (archc's relu6 is Clip(0, 6))")
    return {"op": "relu6"}


def _hardsigmoid(n: Any) -> dict:
    need(abs(n.attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and n.attrs.get("beta", 0.5) == 0.5,
         "alpha/beta other than PyTorch's 1/6 and 0.5")
    return {"op": "hardsigmoid"}


def _gelu(n: Any) -> dict:
    approximate = n.attrs.get("approximate", "none")
    need(approximate in ("none", b"none"), f"approximate={approximate!r} (archc's gelu is the exact one)")
    return {"op": "gelu"}


def _leaky(n: Any) -> dict:
    need(abs(n.attrs.get("alpha", 0.01) - 0.01) < 1e-9, "a slope other than 0.01")
    return {"op": "leaky_relu"}


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    return ACTIVATIONS[a["kind"]].torch.format(x=x[0], inplace=ip)


_CLASSES = {"ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
            "GELU": "gelu", "SiLU": "silu", "Hardswish": "hardswish", "Hardsigmoid": "hardsigmoid"}

OP = Op(
    layers=(LayerOp(Act, lambda s: [("", KIND, {"kind": s.op})]),),
    kinds=(OpDef(
        KIND, same(KIND), attrs=("kind",), torch=TorchCode(None, _call), style=Style("box", "#ffffff"), pointwise=True,
        saves=lambda a, i, o: ((ACTIVATIONS[a["kind"]].saves,), 0),
        inplace=lambda a: ACTIVATIONS[a["kind"]].inplace, fusable=lambda a: ACTIVATIONS[a["kind"]].fusable,
        # every activation is timed like the calibrated ReLU: one pass over the map
        latency=per_map(("relu",), lambda a: "relu", elements)),),
    from_torch={
        **{cls: FromTorch(KIND, _act_in(kind)) for cls, kind in _CLASSES.items()},
        **{f"fn:{kind}": FromTorch(KIND, _act_in(kind), ("inplace",)) for kind in _CLASSES.values()},
        **{f"method:{kind}": FromTorch(KIND, _act_in(kind)) for kind in ("relu", "sigmoid", "tanh")},
        "fn:leaky_relu": FromTorch(KIND, _act_in("leaky_relu"), ("negative_slope", "inplace")),
        "fn:gelu": FromTorch(KIND, _act_in("gelu"), ("approximate",)),
    },
    from_onnx={
        "Relu": FromOnnx(lambda n: {"op": "relu"}), "Clip": FromOnnx(_clip),
        "Sigmoid": FromOnnx(lambda n: {"op": "sigmoid"}), "Tanh": FromOnnx(lambda n: {"op": "tanh"}),
        "LeakyRelu": FromOnnx(_leaky), "HardSwish": FromOnnx(lambda n: {"op": "hardswish"}),
        "Gelu": FromOnnx(_gelu), "HardSigmoid": FromOnnx(_hardsigmoid),
    },
)
