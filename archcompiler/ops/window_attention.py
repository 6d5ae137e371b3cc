"""Swin's (shifted) window attention and MaxViT's window and grid attention (``op: window_attention``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..spec.layers import Bool, LayerBase, NonNegInt, PosInt, Rate
from ._base import (
    Attrs,
    FromOnnx,
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
    Window,
    fmt,
    image,
    need,
    one,
)

KIND = "window_attention"
RUNTIME = "archcompiler.backends.torch.runtime:WindowAttention"


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
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")


def _lower(s: WindowAttention) -> list:
    return [("", KIND, {"heads": s.heads, "window": s.window, "shift": s.shift, "pad": s.pad, "cosine": s.cosine,
                        "dropout": s.dropout, "grid": s.grid, "layout": s.layout})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    """Swin's window attention keeps the map's shape; the window must tile it, unless ``pad`` pads
    the map with zeros to the next multiple of the window first (as torchvision does, and crops the
    result); the heads must divide its channels."""
    c, h, w = image("window_attention", shapes)
    win = a["window"]
    if a["grid"] and (h % win or w % win or a["shift"]):
        raise ShapeError(f"grid attention's {win}x{win} grid must tile the map {fmt(shapes[0])} evenly (no padding, "
                         f"no shift): {h}x{w} is not a multiple of {win}" if h % win or w % win
                         else "grid attention does not shift its grid (shift must be 0)")
    if (h % win or w % win) and not a["pad"]:
        raise ShapeError(f"window {win}x{win} does not tile the map {fmt(shapes[0])}: {h}x{w} is not a "
                         f"multiple of {win} (pad: true pads the map to one, as torchvision does)")
    if c % a["heads"]:
        raise ShapeError(f"heads={a['heads']} does not divide the {c} channels of the map {fmt(shapes[0])}: "
                         f"each head takes {c} / {a['heads']} features")
    if a["shift"] >= win:
        raise ShapeError(f"shift {a['shift']} must be smaller than the window {win}x{win}")
    return shapes[0]


CPB_HIDDEN = 512        # Swin V2's continuous position bias: an MLP 2 -> 512 -> heads (torchvision's)


def _padded(a: Attrs, o: Shape) -> int:
    """The positions window attention computes over: the map padded to a multiple of the window."""
    win = a["window"]
    return -(-o[1] // win) * win * -(-o[2] // win) * win


def _params(a: Attrs, i: list[Shape], o: Shape) -> Params:
    """qkv (C -> 3C) and proj (C -> C) with biases; the relative position bias: a (2W - 1)^2 x heads
    table, or (cosine, Swin V2) the MLP that computes it and the per-head logit scale; buffers: the
    W^4 relative position index (and V2's (2W - 1)^2 x 2 coordinates table)."""
    c, h, w = o[0], a["heads"], a["window"]
    cells = (2 * w - 1) ** 2
    weights, biases, buffers = 4 * c * c, 4 * c, w ** 4
    if a["cosine"]:
        weights += 2 * CPB_HIDDEN + CPB_HIDDEN * h + h
        biases += CPB_HIDDEN
        buffers += 2 * cells
    else:
        weights += cells * h
    return Params(weights, biases, buffers)


def _macs(a: Attrs, i: list[Shape], o: Shape) -> int:
    """The qkv and output projections (4 N C^2 over the map's N = H x W positions), QK^T and the
    scores times V within each window (N W^2 C each: N / W^2 windows of W^2 x W^2 scores per head,
    C / heads deep); Swin V2's position-bias MLP runs once per forward over the (2W - 1)^2 offsets
    (counted per image: the batch shares it). A padded map costs its padded size (torchvision's)."""
    c, n, win = o[0], _padded(a, o), a["window"]
    macs = 4 * n * c * c + 2 * n * win * win * c
    if a["cosine"]:
        macs += (2 * win - 1) ** 2 * (2 * CPB_HIDDEN + CPB_HIDDEN * a["heads"])
    return macs


def _window_scores(a: Attrs, o: Shape) -> int:
    """The attention scores of all windows: heads x N x W^2 (N / W^2 windows of W^2 x W^2 per head)."""
    return a["heads"] * _padded(a, o) * a["window"] ** 2


def _workspace(a: Attrs, i: list[Shape], o: Shape, batch: int) -> int:
    """The most the module holds at once beyond its input and output, for a whole batch (measured with
    torch: tests/test_swin.py). With P the padded map, S the windows' scores and X the map: the windows
    (P) and q, k, v (3P) live through the attention; at QK^T, the scaled q (V2: the normalised q and k)
    and, where the windows and heads do not fold into one batch dimension as views, matmul's contiguous
    copies of both; then the scores with the position bias (heads x W^4) or softmax's output (2S); at
    AV, the output and a copy of v or of the heads' transposed output. V2 adds its q, v bias (3C) and,
    once per forward whatever the batch, the position-bias MLP's hidden (2W - 1)^2 x 512 and output."""
    c, heads, win = o[0], a["heads"], a["window"]
    p, s, x = batch * _padded(a, o) * c, batch * _window_scores(a, o), batch * math.prod(o)
    windows = batch * _padded(a, o) // win ** 2
    copies = p if windows > 1 and heads > 1 and win > 1 else 0      # matmul's reshape to a batch of matrices
    ph, pw = -(-o[1] // win) * win, -(-o[2] // win) * win
    moved = ph > o[1] or pw > o[2] or (win < ph or win < pw) and a["shift"] > 0      # padded or rolled: a copy
    windowed = p if moved or pw > win or a["grid"] else 0    # one window across: the windows are a view of the map
    bias = heads * win ** 4
    av = 3 * p + windowed + s + p + max(copies, p if heads > 1 else 0)
    qkv = 3 * p + windowed
    if not a["cosine"]:
        return max(qkv + p + 2 * copies + s, qkv + 2 * s, qkv + s + bias, av) - x
    cells = (2 * win - 1) ** 2
    return 3 * c + max(qkv + 2 * p + 2 * copies + s, qkv + 2 * s + heads, qkv + s + cells * (CPB_HIDDEN + heads),
                       qkv + s + cells * heads + 2 * bias, av) - x


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """What autograd keeps (measured, tests/test_swin.py): the windows (qkv's input; the map itself
    where they are a view of it), q and k as QK^T reads them, the softmax's output (S), v and the
    heads' output (proj's input); V2 also its normalised q and k with their norms and the scores
    before the logit scale (S)."""
    c, heads, win = o[0], a["heads"], a["window"]
    positions = _padded(a, o)
    p, s = positions * c, _window_scores(a, o)
    ph, pw = -(-o[1] // win) * win, -(-o[2] // win) * win
    moved = ph > o[1] or pw > o[2] or (win < ph or win < pw) and a["shift"] > 0
    view = not (moved or pw > win or a["grid"])
    kept = 2 * s + 8 * p + 4 * heads * positions if a["cosine"] else s + 5 * p
    return (("input",), kept - p) if view else ((), kept)


def _saves_once(a: Attrs, i: list[Shape], o: Shape) -> int:
    """Swin V2's position-bias MLP, once per forward: its hidden layer, the W^4 bias per head through
    its sigmoid, and the clamped logit scale."""
    if not a["cosine"]:
        return 0
    heads, win = a["heads"], a["window"]
    return (2 * win - 1) ** 2 * CPB_HIDDEN + heads * win ** 4 + heads


def _square(value: Any, what: str) -> int:
    v = one(value)
    need(isinstance(v, int), f"a {what} of {list(value)} (archc's windows are square)")
    return v


def _swin_in(s: Any) -> dict:
    """torchvision's ShiftedWindowAttention (V2: its logit_scale and cpb_mlp) on a channels-last map."""
    m = s.module
    need(m.qkv.bias is not None and m.proj.bias is not None and not m.dropout,
         "window attention without the qkv or proj bias, or with dropout after the projection")
    out = {"op": KIND, "heads": m.num_heads, "window": _square(m.window_size, "window"),
           "shift": _square(m.shift_size, "shift"), "pad": True}
    if hasattr(m, "logit_scale"):
        out["cosine"] = True
    if m.attention_dropout:
        out["dropout"] = float(m.attention_dropout)
    return out


def _own_in(s: Any) -> dict:
    """archc's own WindowAttention (runtime.py, as a built spec holds it): its fields back from its
    attributes (the shift it applies: none along a side the window covers whole)."""
    m = s.module
    out = {"op": KIND, "heads": m.heads, "window": m.window, "shift": max(m.shift),
           "pad": not m.maxvit or list(m.padded) != list(m.size)}
    out.update({k: True for k in ("cosine", "grid") if getattr(m, k)})
    if m.maxvit:
        out["layout"] = "maxvit"
    if m.dropout:
        out["dropout"] = float(m.dropout)
    return out


def _partition_in(s: Any) -> dict:
    """torchvision's MaxViT RelativePositionalMultiHeadAttention on a map cut into windows or a grid
    (the importer's partition steps say which: ``s.arg["partition"]``)."""
    m = s.module
    part = s.arg.get("partition")
    need(part is not None, "attention on a tensor that is not a map cut into windows or a grid by "
                           "MaxViT's WindowPartition")
    grid, p = part
    need(m.size * m.size == m.max_seq_len and m.to_qkv.bias is not None and m.merge.bias is not None
         and m.n_heads * m.head_dim == s.shape[0] and (grid or p == m.size) and (not grid or p * m.size == s.shape[1]),
         "relative attention whose windows are not the partition's")
    out = {"op": KIND, "heads": m.n_heads, "window": m.size, "layout": "maxvit"}
    if grid:
        out["grid"] = True
    return out


def _module(a: Attrs, ins: list, out: tuple) -> str:
    return (f"WindowAttention({out[0]}, {a['heads']}, {a['window']}, {a['shift']}, {a['pad']}, {a['cosine']}, "
            f"{a['dropout']!r}, {out[1]}, {out[2]}, {a['grid']}, {a['layout'] == 'maxvit'})")


def _detail(a: Attrs) -> str:
    return f"{a['heads']} heads, {'grid' if a['grid'] else 'window'} {a['window']}" + \
        (f", shift {a['shift']}" if a["shift"] else "")


OP = Op(
    layers=(LayerOp(WindowAttention, _lower),),
    # as torchvision's ShiftedWindowAttention(V2) computes it on its channels-last view: the score matrices
    # are the windows'
    kinds=(OpDef(
        KIND, _shape, attrs=("heads", "window", "shift", "pad", "cosine", "dropout", "grid", "layout"),
        params=_params, macs=_macs, elementwise=lambda a, i, o: 3 * _window_scores(a, o), depth="params",
        window=lambda a, i: Window((a["window"],) * 2, (1, 1), ((a["window"] - 1) // 2,) * 2),
        batch_workspace=_workspace, saves=_saves, saves_once=_saves_once,
        latency=Latency(("attention",), lambda a, i, o: Kernel("attention", (o[0], a["heads"], a["window"] ** 2),
                                                               _macs(a, i, o))),
        torch=TorchCode(_module, lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)", RUNTIME),
        style=Style("box", "#fce4d6", _detail)),),
    # their modules, leaves of the trace (by class name; torchvision's, or archc's own in a module it
    # generated), on a channels-last map (Swin) or one cut into windows or a grid (MaxViT)
    from_torch={"ShiftedWindowAttention": FromTorch(KIND, _swin_in),
                "ShiftedWindowAttentionV2": FromTorch(KIND, _swin_in),
                "WindowAttention": FromTorch(KIND, _own_in),
                "RelativePositionalMultiHeadAttention": FromTorch(KIND, _partition_in)},
    # the importer's pattern of the exporters' nodes (its fields given)
    from_onnx={"pattern:windows": FromOnnx(lambda n: {"op": KIND, **n.attrs})},
)
