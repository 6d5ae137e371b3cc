"""Swin's (shifted) window attention and MaxViT's window and grid attention (``op: window_attention``);
``layout: maxxvit`` / ``maxxvit_2d``: timm's MaxViT and CoAtNet attention (timm/models/maxxvit.py)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

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
from ._partition import MAXXVIT, PARTITION_KIND

KIND = "window_attention"
RUNTIME = "archcompiler.backends.torch.runtime:WindowAttention"
MAXXVIT_LAYOUTS = ("maxxvit", "maxxvit_2d")


class WindowAttention(LayerBase):
    """Swin's (shifted) window multi-head self-attention over an image's positions: the map cut into
    ``window`` x ``window`` windows (after a cyclic shift of ``shift`` positions), each a sequence
    of window^2 tokens attending among themselves with a learned relative position bias, laid out as
    torchvision's ``ShiftedWindowAttention`` (``qkv``, ``proj``, ``relative_position_bias_table``
    and the integer buffer ``relative_position_index``); ``cosine``: Swin V2's scaled cosine
    attention (``logit_scale``) with the continuous position bias of a small MLP (``cpb_mlp``).
    ``grid``: MaxViT's grid attention (``layout: maxvit`` its torchvision module). ``layout: maxxvit``
    is timm's MaxViT attention (``AttentionCl``: ``qkv``, ``proj``, ``rel_pos.relative_position_bias_table``),
    ``maxxvit_2d`` timm's CoAtNet attention (``Attention2d``: the same as 1 x 1 convolutions; over the whole
    map where the window is the map), so timm's keys load. The window must tile the map (or ``pad`` pads
    it) and ``heads`` divide the channels."""

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
    layout: Literal["swin", "maxvit", "timm", "maxxvit", "maxxvit_2d"] = Field("swin", description="the module it is laid out as: "
                                                      "torchvision's Swin ShiftedWindowAttention (qkv, proj; q scaled "
                                                      "by head_dim^-0.5), MaxViT's RelativePositionalMultiHeadAttention "
                                                      "(to_qkv, merge, a 2D index; k scaled by C^-0.5), or timm's Swin "
                                                      "WindowAttention (Swin's, its index outside the state_dict); timm's MaxViT "
                                                      "AttentionCl (maxxvit: qkv and proj Linears, each head's q, k "
                                                      "and v in turn, rel_pos's bias table) or CoAtNet Attention2d "
                                                      "(maxxvit_2d: the same as 1 x 1 convolutions)")
    dropout: Rate = Field(0.0, description="dropout on the attention weights in training, in [0, 1)")
    out: PosInt | None = Field(None, description="layouts maxxvit and maxxvit_2d: the channels proj maps the heads "
                                                 "to (CoAtNet widens the map there); default the input's")

    @model_validator(mode="after")
    def _maxxvit_fields(self) -> WindowAttention:
        if self.layout in MAXXVIT_LAYOUTS and (self.shift or self.pad or self.cosine):
            raise ValueError(f"layout {self.layout} is timm's attention on windows that tile the map: no shift, "
                             "pad or cosine")
        if self.out is not None and self.layout not in MAXXVIT_LAYOUTS:
            raise ValueError("out needs layout maxxvit or maxxvit_2d (the other layouts keep the channels)")
        return self


def _lower(s: WindowAttention) -> list:
    if s.layout in MAXXVIT_LAYOUTS:
        return [("", MAXXVIT, {"heads": s.heads, "window": s.window, "grid": s.grid, "conv": s.layout == "maxxvit_2d",
                               "out": s.out, "dropout": s.dropout})]
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
    if a["layout"] == "timm" and (a["cosine"] or a["grid"]):
        raise ShapeError("layout timm is timm's Swin (V1) window attention: no cosine, no grid")
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
    elif "relative_position_index" in m._non_persistent_buffers_set:
        out["layout"] = "timm"
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


def _timm_in(s: Any) -> dict:
    """timm's Swin WindowAttention (timm.models.swin_transformer), called by its block on the map cut into
    windows after the block's cyclic shift (the importer's window steps give both: ``s.arg["windows"]``,
    the shift and the window) with the block's mask, which must be the shifted windows' own."""
    m = s.module
    need(type(m).__module__ == "timm.models.swin_transformer", f"a WindowAttention of {type(m).__module__} "
                                                               "(archc reads timm's Swin's, timm.models.swin_transformer)")
    part = s.arg.get("windows")
    need(part is not None, "window attention on a tensor that is not the map cut into windows as timm's Swin "
                           "block cuts it (window_partition, after its roll)")
    shift, win = part
    c, h, w = s.shapes[0]
    need(tuple(m.window_size) == (win, win), f"a window of {list(m.window_size)} on windows of {win}x{win}")
    need(m.qkv.in_features == c and m.qkv.out_features == 3 * c and m.proj.in_features == c
         and m.proj.out_features == c and c % m.num_heads == 0,
         "window attention whose heads' width differs from dim / heads (head_dim)")
    need(m.qkv.bias is not None and m.proj.bias is not None, "window attention without the qkv or proj bias")
    need(not float(m.proj_drop.p), "window attention with dropout after the projection (proj_drop)")
    need(_same_mask(s.arg.get("mask"), h, w, win, shift),
         "a mask other than the shifted windows' own (archc's window attention makes it from the shift)")
    out = {"op": KIND, "heads": m.num_heads, "window": win, "layout": "timm"}
    if shift:
        out["shift"] = shift
    if float(m.attn_drop.p):
        out["dropout"] = float(m.attn_drop.p)
    return out


def _same_mask(mask: Any, h: int, w: int, win: int, shift: int) -> bool:
    """Whether ``mask`` (windows x W^2 x W^2, or None) is Swin's mask of a map of h x w shifted by ``shift``:
    -100 between positions that the roll brought from different regions, 0 within one (none without a shift)."""
    if not shift or mask is None:
        return not shift and mask is None
    labels = [[0] * w for _ in range(h)]       # the region each position came from (3 x 3 regions)
    for k, (h0, h1) in enumerate(((0, h - win), (h - win, h - shift), (h - shift, h))):
        for j, (w0, w1) in enumerate(((0, w - win), (w - win, w - shift), (w - shift, w))):
            for r in range(h0, h1):
                labels[r][w0:w1] = [3 * k + j] * (w1 - w0)
    windows = [[labels[bh * win + r][bw * win + c] for r in range(win) for c in range(win)]
               for bh in range(h // win) for bw in range(w // win)]
    want = [[[0.0 if a == b else -100.0 for b in lab] for a in lab] for lab in windows]
    return tuple(mask.shape) == (len(windows), win * win, win * win) and mask.float().tolist() == want


def _window_in(s: Any) -> dict:
    """A module named WindowAttention: timm's Swin's, or archc's own."""
    return _timm_in(s) if type(s.module).__module__.startswith("timm.") else _own_in(s)


def _module(a: Attrs, ins: list, out: tuple) -> str:
    timm = ", timm=True" if a["layout"] == "timm" else ""
    return (f"WindowAttention({out[0]}, {a['heads']}, {a['window']}, {a['shift']}, {a['pad']}, {a['cosine']}, "
            f"{a['dropout']!r}, {out[1]}, {out[2]}, {a['grid']}, {a['layout'] == 'maxvit'}{timm})")


def _detail(a: Attrs) -> str:
    return f"{a['heads']} heads, {'grid' if a['grid'] else 'window'} {a['window']}" + \
        (f", shift {a['shift']}" if a["shift"] else "")


# ----------------------------------------------------------------------------- timm's MaxViT and CoAtNet (maxxvit.py)


def _maxxvit_fields(s: Any, m: Any, window: int, grid: bool, conv: bool) -> dict:
    """timm's AttentionCl or Attention2d (``conv``) with its RelPosBias over ``window`` x ``window`` positions:
    what archc's layouts compute, or Unmappable."""
    c = s.shapes[0][0] if s.shapes else 0
    rel = getattr(m, "rel_pos", None)
    need(rel is not None and type(rel).__name__ == "RelPosBias" and not getattr(rel, "prefix_tokens", 0),
         f"attention with {type(rel).__name__ if rel is not None else 'no'} relative position (archc's "
         "maxxvit layouts have timm's RelPosBias, a table per head)")
    need(tuple(rel.window_size) == (window, window), f"a position bias of {list(rel.window_size)} on windows "
                                                     f"of {window}x{window}")
    need(m.head_first, "qkv laid out q, k, v across all heads (head_first false; archc's has each head's in turn)")
    need(m.qkv.bias is not None and m.proj.bias is not None, "attention without the qkv or proj bias")
    need(m.num_heads * m.dim_head == c and _width(m.qkv, conv) == (c, 3 * c) and _width(m.proj, conv)[0] == c,
         "attention whose heads' width differs from its input's (expand_first: the heads wider than the input)")
    need(not float(m.proj_drop.p), "attention with dropout after proj (proj_drop)")
    out = {"op": KIND, "heads": m.num_heads, "window": window, "layout": "maxxvit_2d" if conv else "maxxvit"}
    if grid:
        out["grid"] = True
    if _width(m.proj, conv)[1] != c:
        out["out"] = _width(m.proj, conv)[1]
    if float(m.attn_drop.p):
        out["dropout"] = float(m.attn_drop.p)
    return out


def _width(layer: Any, conv: bool) -> tuple[int, int]:
    """A Linear's (in, out) features, or a 1 x 1 convolution's channels (anything else: (0, 0))."""
    if not conv:
        return layer.in_features, layer.out_features
    plain = tuple(layer.kernel_size) == (1, 1) and tuple(layer.stride) == (1, 1) and layer.groups == 1 \
        and tuple(layer.dilation) == (1, 1) and layer.padding_mode == "zeros"
    return (layer.in_channels, layer.out_channels) if plain else (0, 0)


def _maxxvit_in(s: Any) -> dict:
    """timm's AttentionCl (MaxViT's _rw models) on its channels-last map cut into windows (window_partition:
    the importer's window steps, ``s.arg["windows"]``: no shift, the window) or a grid (grid_partition,
    ``s.arg["partition"]``: (True, H / G))."""
    c, h, w = s.shapes[0] if s.shapes else (0, 0, 0)
    windows, part = s.arg.get("windows"), s.arg.get("partition")
    if windows is not None and not windows[0]:
        return _maxxvit_fields(s, s.module, windows[1], False, False)
    need(part is not None and part[0] and h == w and h % part[1] == 0,
         "attention on a tensor that is not the map cut into windows or a grid as timm's MaxViT cuts it "
         "(window_partition, grid_partition)")
    return _maxxvit_fields(s, s.module, h // part[1], True, False)


def _coatnet_in(s: Any) -> dict:
    """timm's Attention2d (CoAtNet's _rw models) over the whole map: its position bias covers the map."""
    c, h, w = s.shapes[0] if s.shapes else (0, 0, 0)
    need(not s.arg.get("channels_last") and h == w,
         "Attention2d on anything but a whole square map (archc reads CoAtNet's, not the windows of "
         "PartitionAttention2d)")
    return _maxxvit_fields(s, s.module, h, False, True)


def _own_partition_in(s: Any) -> dict:
    """archc's own PartitionAttention (runtime.py, as a built spec holds it), on its channels-last view."""
    m = s.module
    conv = not hasattr(m.qkv, "in_features")
    c, out = _width(m.qkv, conv)[0], _width(m.proj, conv)[1]
    fields = {"op": KIND, "heads": m.heads, "window": m.window, "layout": "maxxvit_2d" if conv else "maxxvit"}
    fields.update({"grid": True} if m.grid else {})
    fields.update({"out": out} if out != c else {})
    fields.update({"dropout": float(m.dropout)} if m.dropout else {})
    return fields


OP = Op(
    layers=(LayerOp(WindowAttention, _lower, main=KIND),),
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
        style=Style("box", "#fce4d6", _detail)), PARTITION_KIND),
    # their modules, leaves of the trace (by class name; torchvision's, or archc's own in a module it
    # generated), on a channels-last map (Swin) or one cut into windows or a grid (MaxViT)
    from_torch={"ShiftedWindowAttention": FromTorch(KIND, _swin_in),
                "ShiftedWindowAttentionV2": FromTorch(KIND, _swin_in),
                # archc's own (a generated module's) and timm's Swin's
                "WindowAttention": FromTorch(KIND, _window_in, modules=("torch.nn", "torchvision",
                                                                        "timm.models.swin_transformer")),
                "RelativePositionalMultiHeadAttention": FromTorch(KIND, _partition_in),
                # timm's MaxViT and CoAtNet attention (timm/models/maxxvit.py), and archc's own
                "AttentionCl": FromTorch(MAXXVIT, _maxxvit_in, modules=("timm.models.maxxvit",)),
                "Attention2d": FromTorch(MAXXVIT, _coatnet_in, modules=("timm.models.maxxvit",)),
                "PartitionAttention": FromTorch(MAXXVIT, _own_partition_in)},
    # the importer's pattern of the exporters' nodes (its fields given)
    from_onnx={"pattern:windows": FromOnnx(lambda n: {"op": KIND, **n.attrs})},
)
