"""The spec op ``gem_pool``: what archc knows about GeM pooling, declared with archc's public op API
(``archcompiler.ops``) and read without torch; the module the generated code builds is ``torch.py``'s ``GeM``.

Registered through the entry point ``gem_pool = "archc_gem_pool.op"`` of the group ``archcompiler.ops``
(``pyproject.toml``): archc reads ``OP`` when it first needs an op.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from archcompiler.ops import (
    MEMORY,
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
    Unmappable,
    Window,
)
from archcompiler.spec.layers import LayerBase, PosFloat

KIND = "gem_pool"


class GeMPool(LayerBase):
    """Generalised-mean (GeM) pooling (Radenović et al. 2018): each channel's (mean over H x W of
    clamp(x, eps) ** p) ** (1 / p), C x 1 x 1 like global_avg_pool, with the exponent p learned.

    p = 1 is average pooling; a larger p weighs the strongest activations more, towards max pooling."""

    op: Literal["gem_pool"]
    p: PosFloat = Field(3.0, description="the exponent's initial value, > 0 (learned; the paper's: 3)")
    eps: PosFloat = Field(1e-6, description="the input is clamped to at least eps before the power")


def _image(shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeError(f"{KIND} takes one input, got {len(shapes)}")
    if len(shapes[0]) != 3:
        what = "a sequence (tokens x dim)" if len(shapes[0]) == 2 else "a flat"
        dims = "x".join(str(d) for d in shapes[0])
        raise ShapeError(f"{KIND} needs an image (H x W x C) input, got {what} {dims}")
    return shapes[0]


def _shape(a: dict, shapes: list[Shape]) -> Shape:
    c, _, _ = _image(shapes)
    return (c, 1, 1)


def _window(a: dict, shapes: list[Shape]) -> Window:
    """One window over the whole map, as a global average pool."""
    _, h, w = shapes[0]
    return Window((h, w), (h, w), (0, 0))


def _kernel(a: dict, i: list[Shape], o: Shape) -> Kernel:
    """Timed like the calibrated adaptive pool (a pass over the input map) at three times its work:
    a clamp, a power and a sum per element."""
    if len(i[0]) != 3:
        return Kernel(MEMORY)
    c, h, _ = i[0]
    return Kernel("adaptive_pool", (c, c, h), 3 * math.prod(i[0]))


def _from_torch(s) -> dict:
    """archc_gem_pool.torch.GeM, read by the importer as a leaf: its p (one value) and eps."""
    p = s.module.p
    if p.numel() != 1 or not float(p.detach().reshape(-1)[0]) > 0 or not s.module.eps > 0:
        raise Unmappable("a GeM whose p is not one positive value or whose eps is not positive")
    return {"op": KIND, "p": float(p.detach().reshape(-1)[0]), "eps": float(s.module.eps)}


OP = Op(
    layers=(LayerOp(GeMPool, lambda s: [("", KIND, {"p": s.p, "eps": s.eps})]),),
    kinds=(OpDef(
        KIND, _shape, attrs=("p", "eps"),
        params=lambda a, i, o: Params(weights=1),                     # the exponent
        # clamp, power and sum per input element, then one power per channel
        elementwise=lambda a, i, o: 3 * math.prod(i[0]) + o[0],
        window=_window, depth="pooling",
        # while the power runs: the clamped copy and its power, each the input's size, and the output not
        # made yet (measured: the input and two copies of it at the peak; the pass counts the output live)
        workspace=lambda a, i, o: 2 * math.prod(i[0]) - math.prod(o),
        # for backward: the input (clamp's mask), the clamped copy and its power (the power's gradients
        # for x and for p), and the mean and the output (the last power's)
        saves=lambda a, i, o: (("input", "output"), 2 * math.prod(i[0]) + o[0]),
        # the power's backward, beside the input's gradient: the mean's gradient spread over the map, the
        # logarithm, the two gradients and their products (measured: five maps of the input's size)
        backward_workspace=lambda a, i, o: 5 * math.prod(i[0]),
        latency=Latency(("adaptive_pool", MEMORY), _kernel),
        torch=TorchCode(lambda a, ins, out: f"GeM({a['p']!r}, {a['eps']!r})",
                        lambda a, x, m, ip: f"{m}({x[0]})", helper="archc_gem_pool.torch:GeM"),
        style=Style("box", "#fde0c5", lambda a: f"p {a['p']:g}"),
    ),),
    # the module, when the importer traces a model that uses it (by class name and module path)
    from_torch={"GeM": FromTorch(KIND, _from_torch, modules=("archc_gem_pool",))},
)
