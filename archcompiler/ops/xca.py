"""Cross-covariance attention (``op: xca``: XCiT's and EdgeNeXt's XCA, timm's ``CrossCovarianceAttn``): attention
across each head's channels, not its tokens."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, PosInt, Rate
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
    ShapeError,
    Style,
    TorchCode,
    fmt,
    need,
    sequence,
)

KIND = "xca"
RUNTIME = "archcompiler.backends.torch.runtime:CrossCovarianceAttention"


class Xca(LayerBase):
    """Cross-covariance attention over a sequence (XCiT's and EdgeNeXt's XCA): q, k and v per head, each head's
    D / heads features a row over the S tokens; q and k L2-normalised over the tokens, their D / heads x
    D / heads product (the covariance of the channels, so the cost grows with S linearly) times the head's
    learned temperature, softmax, times v. Laid out as timm's `CrossCovarianceAttn`: `temperature` (heads x 1
    x 1), `qkv` (D -> 3D), `proj` (D -> D); `heads` must divide the sequence's dimension."""

    op: Literal["xca"]
    heads: PosInt = Field(description="attention heads; each mixes its dim / heads features")
    qkv_bias: Bool = Field(True, description="a bias on the qkv projection (timm's qkv_bias)")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")


def _lower(s: Xca) -> list:
    return [("", KIND, {"heads": s.heads, "qkv_bias": s.qkv_bias, "dropout": s.dropout})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    s, d = sequence(KIND, shapes)
    if d % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the dimension {d} of the sequence {fmt(shapes[0])}: "
                         f"each head takes {d} / {a['heads']} features")
    return (s, d)


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (3 D^2, its bias 3D or none), proj (D^2 + D) and the temperature of each head."""
    d = o[1]
    return Params(4 * d * d + a["heads"], (4 if a["qkv_bias"] else 1) * d)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The q, k, v and output projections (4 S D^2), and per head q k^T and the weights times v (S (D /
    heads)^2 each)."""
    s, d = o
    return 4 * s * d * d + 2 * s * d * (d // a["heads"])


def _elementwise(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The normalisation of q and k (S D each: squares, division) and the temperature's scaling and softmax of
    the heads' (D / heads)^2 weights."""
    s, d = o
    return 2 * s * d + 4 * d * (d // a["heads"])


def _batch_workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """Beyond its input and output, at the forward's peak (measured: tests/test_edgenext.py): per sample the qkv
    projection (3 S D), the normalised q and k (S D each) and the heads' weights (D^2 / heads); over several
    samples and heads the batched product copies q and k (2 S D: the heads' rows are not one stride apart),
    while the output (S D) is not made yet."""
    s, d = o
    copies = s * d if batch > 1 and a["heads"] > 1 else 0
    return batch * (5 * s * d + d * (d // a["heads"]) + copies)


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps beyond qkv's input (measured: tests/test_edgenext.py): the qkv projection (3 S D:
    q, k and v are views of it), the normalised q and k (S D each: over several heads and samples, the
    batched product's copies of them instead), the weights before and after the softmax (2 D^2 / heads) and
    the joined heads that proj reads (S D); over several heads, the batched product's copy of v (S D: counted
    as at a batch of more than one, as training runs). Within 1.5% of a training step over several heads;
    over one head within 0.5% where its output is kept (a layer scale after it, as in EdgeNeXt), and up to 6%
    under otherwise."""
    s, d = o
    return ("input",), (7 if a["heads"] > 1 else 6) * s * d + 2 * d * (d // a["heads"])


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """In backward, beyond what it saved and the gradients of its input and output: S D, fitted to measured
    training steps (tests/test_edgenext.py; the normalisations' backward makes several S D temporaries while
    the products' saved tensors are already freed)."""
    s, d = o
    return s * d


def _from_torch(s: Any) -> dict:
    """timm's CrossCovarianceAttn (a leaf of the trace, read in timm's EdgeNeXt) and archc's own
    CrossCovarianceAttention: qkv (D -> 3D), proj (D -> D, with bias), a temperature per head, no dropout
    after proj."""
    m = s.module
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 2, "attention over other than one sequence")
    d, h = s.shapes[0][1], int(m.num_heads)
    need(m.qkv.in_features == d and m.qkv.out_features == 3 * d and m.proj.in_features == m.proj.out_features == d
         and m.proj.bias is not None and d % h == 0, "cross-covariance attention whose qkv is not D -> 3D or proj "
                                                     "not D -> D with its bias")
    need(tuple(m.temperature.shape) == (h, 1, 1), f"a temperature of shape {list(m.temperature.shape)} (archc's "
                                                  f"{KIND} has one per head, heads x 1 x 1)")
    need(not float(getattr(getattr(m, "proj_drop", None), "p", 0.0)),
         "attention with dropout after proj (proj_drop; archc's dropout is a layer of its own)")
    drop = getattr(m, "attn_drop", None)
    dropout = float(drop.p) if drop is not None else float(m.dropout)
    out: dict = {"op": KIND, "heads": h}
    if m.qkv.bias is None:
        out["qkv_bias"] = False
    if dropout:
        out["dropout"] = dropout
    return out


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return f"CrossCovarianceAttention({out[1]}, {a['heads']}, {a['qkv_bias']}, {a['dropout']!r})"


OP = Op(
    layers=(LayerOp(Xca, _lower),),
    kinds=(OpDef(KIND, _shape, attrs=("heads", "qkv_bias", "dropout"), params=_params, macs=_macs,
                 elementwise=_elementwise, depth="params", batch_workspace=_batch_workspace, saves=_saves,
                 backward_workspace=_backward_workspace, mixes=True,
                 latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[1], a["heads"], o[0]),
                                                                         _macs(a, i, o))),
                 torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]})", RUNTIME),
                 style=Style("box", "#fce4d6", lambda a: f"{a['heads']} heads, cross-covariance"
                                                         + ("" if a["qkv_bias"] else ", no qkv bias"))),),
    # timm's class (a leaf of the trace, read in timm's EdgeNeXt) and archc's own in a module it generated
    from_torch={"CrossCovarianceAttn": FromTorch(KIND, _from_torch, modules=("timm.models.edgenext",)),
                "CrossCovarianceAttention": FromTorch(KIND, _from_torch)},
)
