"""Channels [start, end) of the input, a view: made by ``--optimize``'s sibling fusion only (no spec layer)."""

from __future__ import annotations

from ._base import A_STATEMENT, Attrs, Op, OpDef, Shape, ShapeError, Style, TorchCode, image

KIND = "channel_slice"


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    if not 0 <= a["start"] < a["end"] <= c:
        raise ShapeError(f"channels {a['start']}:{a['end']} are not within the input's {c}")
    return (a["end"] - a["start"], h, w)


OP = Op(kinds=(OpDef(KIND, _shape, attrs=("start", "end"), elementwise=lambda a, i, o: 0, alias="view",
                     grad_passthrough=True, latency=A_STATEMENT,
                     torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]}[:, {a['start']}:{a['end']}]"),
                     style=Style()),))
