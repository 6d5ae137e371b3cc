"""A gated MLP over a sequence (``op: swiglu``): SwiGLU, as EVA-02 has it, laid out as timm's ``GluMlp``
(one ``fc1`` whose halves are the gate and the value) or timm's ``SwiGLU`` (``fc1_g`` and ``fc1_x``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, PosFloat, PosInt
from ._base import (
    Attrs,
    FromTorch,
    Kernel,
    Latency,
    LayerOp,
    Op,
    OpDef,
    Params,
    Shape,
    Style,
    TorchCode,
    need,
    sequence,
)

KIND = "swiglu"
RUNTIME = "archcompiler.backends.torch.runtime:GatedMlp"
# the gate's activation by the class timm's MLPs hold (GluMlp's act_layer)
ACTS = {"SiLU": "silu", "Sigmoid": "sigmoid", "GELU": "gelu"}


class Swiglu(LayerBase):
    """A gated MLP over a sequence's tokens (SwiGLU: EVA-02's MLP): each token's features through two
    projections to ``hidden`` features, the activation of one (the gate) times the other (the value), an
    optional LayerNorm on that, and a projection to ``out`` features. Laid out as timm's ``GluMlp``
    (``layout: packed``: ``fc1`` holds the gate and the value as its output's two halves) or timm's
    ``SwiGLU`` (``layout: split``: ``fc1_g`` and ``fc1_x``), ``fc2`` after, so timm's keys load."""

    op: Literal["swiglu"]
    hidden: PosInt = Field(description="the gated width: the features of the gate, of the value and of fc2's input")
    out: PosInt | None = Field(None, description="output features; default: the input's")
    act: Literal["silu", "sigmoid", "gelu"] = Field("silu", description="the gate's activation (silu: SwiGLU; "
                                                                         "sigmoid: GLU; gelu: GEGLU)")
    layout: Literal["packed", "split"] = Field("packed", description="packed: one fc1 of 2 x hidden outputs (timm's "
                                                                     "GluMlp); split: fc1_g and fc1_x (timm's SwiGLU)")
    gate: Literal["first", "last"] = Field("first", description="layout packed: which half of fc1's output is the "
                                                                "gate (timm's gate_last: last)")
    bias: Bool = Field(True, description="biases on fc1 (fc1_g, fc1_x) and fc2")
    norm: Bool = Field(False, description="a LayerNorm on the gated features before fc2 (EVA-02's scale_mlp)")
    eps: PosFloat = Field(1e-6, description="the LayerNorm's eps (norm: true)")


def _lower(s: Swiglu) -> list:
    return [("", KIND, {"hidden": s.hidden, "out": s.out, "act": s.act, "layout": s.layout, "gate": s.gate,
                        "bias": s.bias, "norm": s.norm, "eps": s.eps})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    return (s, a["out"] or d)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    d, h, out = i[0][-1], a["hidden"], o[-1]
    weights, biases = 2 * d * h + h * out, (2 * h + out if a["bias"] else 0)
    if a["norm"]:
        weights, biases = weights + h, biases + h
    return Params(weights, biases)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The gate's and the value's projections (2 S D H) and fc2's (S H out)."""
    s, d = i[0]
    return s * a["hidden"] * (2 * d + o[-1])


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The gate's activation and the product (2 per gated feature), the LayerNorm's 5."""
    return o[0] * a["hidden"] * (7 if a["norm"] else 2)


def _workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Beyond its input and output, at its peak (measured: tests/test_eva.py): before fc2 makes the output,
    packed: fc1's output (2 S H: the gate and the value are views of it, alive to the end of the forward),
    the gate's activation and the product (S H each; with the norm, its output and mean and 1 / std per
    token at the norm); split: the activation, the value and the product (3 S H; the gate's projection is
    freed once read). While fc2 runs, fc1's output (packed), the product and the norm's output."""
    s, h, out = o[0], a["hidden"], o[-1]
    norm = a["norm"]
    if a["layout"] == "packed":
        before, during = 4 * s * h + (2 * s if norm else 0), 3 * s * h + (s * h if norm else 0)
    else:
        before, during = max(3 * s * h, 2 * s * h + 2 * s) if norm else 3 * s * h, s * h * (2 if norm else 1)
    return max(before - s * out, during)


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps: the input (fc1's), the gate and the value (packed: fc1's output, 2 S H), the
    activation (the product's), the product (fc2's or the norm's); the norm's output (fc2's) and its mean
    and 1 / std per token (measured: tests/test_eva.py)."""
    s, h = o[0], a["hidden"]
    return ("input",), 4 * s * h + (s * h + 2 * s if a["norm"] else 0)


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Packed, at its backward's peak (the product's backward): the gradients of the gate and of the value
    (2 S H, which fc1's gradient then joins), less the input's gradient, not made yet though the memory pass
    counts it from the op's start; split: none beyond what the pass counts (measured within 1% of a
    training step: tests/test_eva.py)."""
    s, d = i[0]
    return max(2 * s * a["hidden"] - s * d, 0) if a["layout"] == "packed" else 0


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return (f"GatedMlp({ins[0][-1]}, {a['hidden']}, {out[-1]}, {a['act']!r}, {a['layout'] == 'packed'}, "
            f"{a['gate'] == 'last'}, {a['bias']}, {a['eps'] if a['norm'] else 0.0!r})")


def _norm_eps(norm: Any, hidden: int) -> float | None:
    """The eps of the LayerNorm on the gated features, None where there is none; another norm refused."""
    if norm is None or type(norm).__name__ == "Identity":
        return None
    need(type(norm).__name__ == "LayerNorm" and tuple(getattr(norm, "normalized_shape", ())) == (hidden,)
         and getattr(norm, "weight", None) is not None and getattr(norm, "bias", None) is not None
         and not getattr(norm, "_fast_norm", False),
         f"a {type(norm).__name__} on the gated features (archc's swiglu takes a LayerNorm with weight and bias)")
    return float(norm.eps)


def _act(act: Any) -> str:
    name = ACTS.get(type(act).__name__)
    need(name is not None and getattr(act, "approximate", "none") == "none",
         f"a gate activation {type(act).__name__} (archc's swiglu gates with {', '.join(ACTS)})")
    return name


def _fields(d: int, hidden: int, out: int, act: str, layout: str, gate: str, bias: bool, eps: float | None) -> dict:
    fields: dict = {"op": KIND, "hidden": hidden}
    if out != d:
        fields["out"] = out
    for key, value, default in (("act", act, "silu"), ("layout", layout, "packed"), ("gate", gate, "first"),
                                ("bias", bias, True)):
        if value != default:
            fields[key] = value
    if eps is not None:
        fields["norm"] = True
        if eps != 1e-6:
            fields["eps"] = eps
    return fields


def _linear(m: Any, d: int, out: int | None = None) -> bool:
    return type(m).__name__ == "Linear" and m.in_features == d and (out is None or m.out_features == out)


def _checked(s: Any, linears: list, fc2: Any, drops: list) -> int:
    """The input's features, once the call is a gated MLP over a sequence archc lays out the same."""
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "a gated MLP over an image (archc's swiglu takes tokens)")
    need(all(type(m).__name__ == "Linear" for m in [*linears, fc2]), "a gated MLP of convolutions (use_conv)")
    biased = {m.bias is not None for m in [*linears, fc2]}
    need(len(biased) == 1, "a gated MLP with a bias on fc1 and none on fc2, or the reverse")
    need(not any(float(getattr(p, "p", 0.0)) for p in drops),
         "a gated MLP with dropout (archc's dropout is a layer of its own)")
    return s.shapes[0][-1]


def _glu_mlp(s: Any) -> dict:
    """timm's GluMlp (SwiGLUPacked: EVA-02's MLP without scale_mlp)."""
    m = s.module
    d = _checked(s, [m.fc1], m.fc2, [m.drop1, m.drop2])
    hidden = m.fc1.out_features // 2
    need(_linear(m.fc1, d, 2 * hidden) and _linear(m.fc2, hidden), "a GluMlp whose fc1 and fc2 do not fit")
    return _fields(d, hidden, m.fc2.out_features, _act(m.act), "packed", "last" if m.gate_last else "first",
                   m.fc2.bias is not None, _norm_eps(m.norm, hidden))


def _swiglu(s: Any) -> dict:
    """timm's SwiGLU (EVA-02's MLP with scale_mlp: fc1_g, fc1_x, a LayerNorm, fc2)."""
    m = s.module
    d = _checked(s, [m.fc1_g, m.fc1_x], m.fc2, [m.drop1, m.drop2])
    hidden = m.fc1_g.out_features
    need(_linear(m.fc1_g, d, hidden) and _linear(m.fc1_x, d, hidden) and _linear(m.fc2, hidden),
         "a SwiGLU whose fc1_g, fc1_x and fc2 do not fit")
    return _fields(d, hidden, m.fc2.out_features, _act(m.act), "split", "first", m.fc2.bias is not None,
                   _norm_eps(m.norm, hidden))


def _own(s: Any) -> dict:
    """archc's own GatedMlp (runtime.py, as a built spec holds it)."""
    m = s.module
    packed = hasattr(m, "fc1")
    first = m.fc1 if packed else m.fc1_g
    hidden = first.out_features // 2 if packed else first.out_features
    return _fields(first.in_features, hidden, m.fc2.out_features, m.act, "packed" if packed else "split",
                   "last" if m.gate_last else "first", m.fc2.bias is not None, _norm_eps(m.norm, hidden))


def _kernel(a: Attrs, i: list[Shape], o: Shape) -> Kernel:
    return Kernel("matmul", (i[0][-1], a["hidden"], o[0]), _macs(a, i, o))


def _detail(a: Attrs) -> str:
    return f"{a['hidden']} gated, {a['act']}" + (" + norm" if a["norm"] else "")


OP = Op(
    layers=(LayerOp(Swiglu, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("hidden", "out", "act", "layout", "gate", "bias", "norm", "eps"),
                 params=_params, macs=_macs, elementwise=_elementwise, depth="params", workspace=_workspace,
                 saves=_saves, backward_workspace=_backward_workspace,
                 latency=Latency(("matmul",), _kernel),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#e2efda", _detail)),),
    # timm's modules (leaves of the trace: their classes in timm's packages) and archc's own in a module it generated
    from_torch={"GluMlp": FromTorch(KIND, _glu_mlp, modules=("timm.layers",)),
                "SwiGLU": FromTorch(KIND, _swiglu, modules=("timm.layers",)),
                "GatedMlp": FromTorch(KIND, _own)},
)
