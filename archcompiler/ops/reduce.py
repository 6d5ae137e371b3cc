"""A reduction over some of the sample's dims (``op: reduce``): their mean, sum, maximum or minimum.

The specialised ops keep what they name: a mean over an image's height and width is ``global_avg_pool`` and a
mean over a sequence's tokens ``token_mean``; ``reduce`` is every other mean, and the sums, maxima and minima
(``x.mean(-1, keepdim=True)``, ``x.sum((2, 3))``, ``x.amax(1)``, ``x.max(dim=1)[0]``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from ..spec.layers import Bool, LayerBase, not_bool
from ._base import (
    Attrs,
    FromOnnx,
    FromTorch,
    LayerOp,
    Op,
    OpDef,
    Shape,
    ShapeError,
    Style,
    TorchCode,
    Unmappable,
    fmt,
    need,
)

KIND = "reduce"
SUM = "reduce_sum"      # a sum: its backward hands the gradient on expanded, a view (the others allocate)
MAX_RANK = 8            # the most dims a dim number may name (torch's tensors here have at most four)
Dim = Annotated[int, BeforeValidator(not_bool), Field(ge=-MAX_RANK, le=MAX_RANK)]
How = Literal["mean", "sum", "max", "min"]
_CALL = {"mean": "mean", "sum": "sum", "max": "amax", "min": "amin"}


class Reduce(LayerBase):
    """The mean, sum, maximum or minimum over some of the sample's dims (`x.mean(-1, keepdim=True)`,
    `x.sum((2, 3))`, `x.amax(1)`). A mean over an image's height and width is `global_avg_pool`, over a
    sequence's tokens `token_mean`: the import writes those where they apply."""

    op: Literal["reduce"]
    how: How = Field("mean", description="mean, sum, max or min of the values along the dims")
    dims: Dim | Annotated[list[Dim], Field(min_length=1, max_length=MAX_RANK)] = Field(
        description="the dims reduced, numbered as torch numbers the batched tensor: 1 is an image's channels "
                    "(a sequence's tokens), 2 and 3 its height and width; negative from the last (-1); the batch, "
                    "dim 0, is never reduced")
    keepdim: Bool = Field(False, description="keep each reduced dim as a dim of size 1 (a C x 1 x 1 map from a "
                                             "mean over height and width), as torch's keepdim")

    @field_validator("dims")
    @classmethod
    def _not_the_batch(cls, value: Any) -> Any:
        dims = value if isinstance(value, list) else [value]
        if 0 in dims:
            raise ValueError("dim 0 is the batch, which a layer never reduces (the sample's dims are 1, 2, ...)")
        if len(set(dims)) != len(dims):
            raise ValueError(f"dims {dims} names a dim twice")
        return value


def _lower(s: Reduce) -> list:
    dims = s.dims if isinstance(s.dims, list) else [s.dims]
    return [("", SUM if s.how == "sum" else KIND, {"how": s.how, "dims": tuple(dims), "keepdim": s.keepdim})]


def positive(dims: Any, shape: Shape, what: str) -> list[int]:
    """``dims`` (torch's numbers of the batched tensor, negative from the last) as 1 .. rank of the per-sample
    ``shape``; a ShapeError for the batch, a dim outside the shape, or one named twice."""
    rank = len(shape)
    out = []
    for d in dims if isinstance(dims, (list, tuple)) else [dims]:
        p = int(d) + rank + 1 if int(d) < 0 else int(d)
        if p == 0:
            raise ShapeError(f"{what} over dim {d}: that is the batch (the input {fmt(shape)} has dims 1 to {rank} "
                             f"per sample, or -1 to -{rank})")
        if not 1 <= p <= rank:
            raise ShapeError(f"{what} over dim {d}: the input {fmt(shape)} has dims 1 to {rank} (or -1 to -{rank})")
        out.append(p)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what} over dims {list(dims)}: they name a dim of the input {fmt(shape)} twice")
    return sorted(out)


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"{KIND} takes one input, got {len(shapes)}")
    (s,) = shapes
    dims = positive(a["dims"], s, f"a {a['how']}")
    if a["keepdim"]:
        return tuple(1 if k + 1 in dims else n for k, n in enumerate(s))
    out = tuple(n for k, n in enumerate(s) if k + 1 not in dims)
    if not out:
        raise ShapeError(f"a {a['how']} over every dim of the input {fmt(s)} leaves one number per sample, which "
                         "no archc layer reads: keep the dims (keepdim: true)")
    return out


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    dims = a["dims"]
    dim = str(dims[0]) if len(dims) == 1 else f"({', '.join(map(str, dims))})"
    return f"{x[0]}.{_CALL[a['how']]}({dim}{', keepdim=True' if a['keepdim'] else ''})"


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """mean and sum: nothing (their backward needs the input's shape alone); amax and amin: the input and the
    output (the backward spreads the gradient over the elements equal to the result). Measured
    (tests/test_reduce.py)."""
    return ((), 0) if a["how"] in ("mean", "sum") else (("input", "output"), 0)


def _backward_workspace(a: Attrs, i: list[Shape], o: Shape) -> int:
    """amax's and amin's backward compares the input with the result (a mask of bytes, a quarter of a float per
    input element) and holds four output-sized temporaries (the tie count, the gradient over it, ...) beside
    the input's gradient; mean's makes the input's gradient alone. Measured (tests/test_reduce.py)."""
    return 0 if a["how"] in ("mean", "sum") else -(-math.prod(i[0]) // 4) + 4 * math.prod(o)


# ------------------------------------------------------------------------------------------- import

_VIEWS = ("channels_last", "batched", "partition", "windows", "patches")


def _torch_layer(how: How) -> Any:
    def layer(s: Any) -> dict:
        dims = s.arg.get("dim")
        need(len(s.shapes) == 1, f"a {how} of {len(s.shapes)} tensors (archc's reduce takes one layer's output: "
                                 f"the element-wise maximum of two tensors has no archc op)")
        need(dims is not None and dims != [] and dims != (), f"a {how} of the whole tensor, the batch included "
                                                              "(archc's reduce keeps the batch: name the dims)")
        need(not any(s.arg.get(v) for v in _VIEWS), f"a {how} of a view that archc reads in another layout "
                                                   "(after x.permute or a cut into windows)")
        need(s.arg.get("dtype") is None and s.arg.get("out") is None, f"a {how} with a dtype or an out tensor")
        try:
            dims = positive(dims, s.shapes[0], f"a {how}")
        except ShapeError as exc:
            raise Unmappable(str(exc)) from None
        return {"op": KIND, "how": how, "dims": dims[0] if len(dims) == 1 else dims,
                **({"keepdim": True} if s.arg.get("keepdim") else {})}
    return layer


def _onnx_layer(how: How) -> Any:
    def layer(n: Any) -> dict:
        axes = n.attrs.get("axes")
        if axes is None and len(n.consts) > 1 and n.consts[1] is not None:
            axes = [int(v) for v in n.consts[1]]            # opset 18: the axes are the second input
        need(axes is not None or len(n.consts) < 2, "axes computed by the graph")
        need(bool(axes) and not n.attrs.get("noop_with_empty_axes", 0),
             f"a Reduce{how.title()} of the whole tensor, the batch included (archc's reduce keeps the batch)")
        need(not n.last, "a reduction of a channels-last view")
        try:
            dims = positive(axes, n.shapes[0], f"a {how}")
        except ShapeError as exc:
            raise Unmappable(str(exc)) from None
        return {"op": KIND, "how": how, "dims": dims[0] if len(dims) == 1 else dims,
                **({"keepdim": True} if n.attrs.get("keepdims", 1) else {})}
    return layer


_STYLE = Style("box", "#fde0c5", lambda a: f"{a['how']} over {', '.join(map(str, a['dims']))}")
_ARGS = ("dim", "keepdim")       # as the specialised means read them: an else: entry reads the same arguments

OP = Op(
    layers=(LayerOp(Reduce, _lower, main=KIND),),
    # one element operation per input element read; no multiply-adds (torch's FlopCounterMode counts none)
    kinds=tuple(OpDef(kind, _shape, attrs=("how", "dims", "keepdim"), elementwise=lambda a, i, o: math.prod(i[0]),
                      saves=_saves, backward_workspace=_backward_workspace, grad_passthrough=kind == SUM,
                      torch=TorchCode(None, _call), style=_STYLE) for kind in (KIND, SUM)),
    # "else:KEY": what a call of KEY that its specialised op refuses is (a mean over other dims than an image's
    # height and width, or a sequence's tokens)
    from_torch={
        "else:method:mean": FromTorch(KIND, _torch_layer("mean"), _ARGS),
        "else:fn:mean": FromTorch(KIND, _torch_layer("mean"), _ARGS),
        "else:mean:tokens": FromTorch(KIND, _torch_layer("mean"), _ARGS),
        **{f"{how}:{name}": FromTorch(SUM if what == "sum" else KIND, _torch_layer(what), _ARGS)
           for name, what in (("sum", "sum"), ("amax", "max"), ("amin", "min"))
           for how in ("method", "fn")},
        # x.max(dim) and torch.max(x, dim): the values and the indices; the layer is the values ([0], .values)
        **{f"{how}:{name}": FromTorch(KIND, _torch_layer(name), _ARGS, first=True)
           for name in ("max", "min") for how in ("method", "fn")},
    },
    from_onnx={"ReduceSum": FromOnnx(_onnx_layer("sum")), "ReduceMax": FromOnnx(_onnx_layer("max")),
               "ReduceMin": FromOnnx(_onnx_layer("min")), "else:ReduceMean": FromOnnx(_onnx_layer("mean"))},
)
