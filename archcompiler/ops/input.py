"""The network's input: the IR's first node (no spec layer: a spec's ``input:`` gives its shape)."""

from __future__ import annotations

from ._base import A_STATEMENT, Op, OpDef, Style, TorchCode

OP = Op(kinds=(OpDef(
    "input", lambda a, i: tuple(a["shape"]), attrs=("shape",), elementwise=lambda a, i, o: 0, latency=A_STATEMENT,
    torch=TorchCode(None, lambda a, x, m, ip: "x"),          # forward()'s argument
    style=Style("box", "#ffffff")),))
