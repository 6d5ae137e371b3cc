"""Padding of an image's height and width by a number of pixels per side (``op: pad``: F.pad, nn.ZeroPad2d,
nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d; ONNX Pad): HGNetV2's stem pads the right and bottom
by one pixel before a 2 x 2 convolution and a 2 x 2 max pool. A convolution's or a pool's own padding (symmetric,
or TensorFlow's ``same``) stays that op's field; this is the standalone step."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec.layers import Float, LayerBase, NonNegInt
from ..spec.limits import MAX_DIM
from . import _onnx
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
    Window,
    elements,
    image,
    need,
    per_map,
)

KIND = "pad"
SIDES = ("left", "right", "top", "bottom")         # torch's order of an image's pads
MODES = ("constant", "reflect", "replicate")
# torch's mode -> ONNX Pad's
ONNX_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


class Pad(LayerBase):
    """Pads an image's height and width: `left`, `right`, `top` and `bottom` pixels, filled with `value`
    (mode constant), the image mirrored about its edge pixel (reflect) or its edge pixel repeated (replicate);
    F.pad(x, (left, right, top, bottom), mode, value) (HGNetV2's stem: `{op: pad, right: 1, bottom: 1}`)."""

    op: Literal["pad"]
    left: NonNegInt = Field(0, description="pixels added before the first column")
    right: NonNegInt = Field(0, description="pixels added after the last column")
    top: NonNegInt = Field(0, description="pixels added before the first row")
    bottom: NonNegInt = Field(0, description="pixels added after the last row")
    value: Float = Field(0.0, description="constant mode: the number every added pixel holds")
    mode: Literal["constant", "reflect", "replicate"] = Field(
        "constant", description="constant: the added pixels hold `value`; reflect: the image mirrored about its "
                                "edge pixel (torch's reflect, each pad less than the image's size); replicate: the "
                                "edge pixel repeated")

    @model_validator(mode="after")
    def _value_is_constants(self) -> Pad:
        if self.value != 0 and self.mode != "constant":
            raise ValueError(f"'value' fills the constant mode's pixels; {self.mode} copies the image's own")
        return self


def _lower(s: Pad) -> list:
    return [("", KIND, {"left": s.left, "right": s.right, "top": s.top, "bottom": s.bottom,
                        "value": float(s.value), "mode": s.mode})]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    c, h, w = image(KIND, shapes)
    if a["mode"] == "reflect":
        for side, n, size in (("top", a["top"], h), ("bottom", a["bottom"], h), ("left", a["left"], w),
                              ("right", a["right"], w)):
            if n >= size:
                raise ShapeError(f"{KIND}: reflect pads the {side} by {n} pixels, which the {size}-pixel "
                                 f"{'height' if side in ('top', 'bottom') else 'width'} cannot mirror (each pad "
                                 f"must be less than it, as torch requires)")
    oh, ow = h + a["top"] + a["bottom"], w + a["left"] + a["right"]
    if max(oh, ow) > MAX_DIM:
        raise ShapeError(f"{KIND}: the padded map would be {oh}x{ow} (at most {MAX_DIM} a side)")
    return c, oh, ow


def _window(a: Attrs, i: list[Shape]) -> Window:
    """Each pixel is one input pixel (or a constant), moved by the pads before it: kernel 1, stride 1."""
    return Window((1, 1), (1, 1), (a["top"], a["left"]))


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    pads = f"({a['left']}, {a['right']}, {a['top']}, {a['bottom']})"
    how = f", mode='{a['mode']}'" if a["mode"] != "constant" else f", value={a['value']!r}" if a["value"] else ""
    return f"F.pad({x[0]}, {pads}{how})"


def _detail(a: Attrs) -> str:
    sides = ", ".join(f"{side} {a[side]}" for side in SIDES if a[side])
    how = a["mode"] if a["mode"] != "constant" else f"value {a['value']:g}" if a["value"] else ""
    return " ".join(t for t in (sides or "nothing", how) if t)


def _saves(a: Attrs, i: list[Shape], o: Shape) -> tuple[tuple[str, ...], int]:
    """reflect and replicate keep their input for the backward pass (measured); constant keeps nothing (its
    gradient is the output's gradient cut)."""
    return (("input",), 0) if a["mode"] != "constant" else ((), 0)


# ----------------------------------------------------------------------------- import


def _fields(pads: list[int], mode: str, value: float) -> dict | None:
    """The spec's fields of pads (left, right, top, bottom); None where they pad nothing (the input itself)."""
    need(min(pads) >= 0, f"a negative pad {pads} (a crop: archc's pad adds pixels)")
    need(max(pads) <= MAX_DIM, f"pads {pads} (each at most {MAX_DIM})")
    need(math.isfinite(value), f"a fill of {value} (archc's pad holds a finite number)")
    if not any(pads):
        return None
    fields: dict[str, Any] = {"op": KIND, **{side: n for side, n in zip(SIDES, pads) if n}}
    if mode != "constant":
        fields["mode"] = mode
    elif value != 0:
        fields["value"] = value
    return fields


def _from_torch(s: Any) -> dict | None:
    """F.pad(x, pad, mode, value) and the padding modules (their ``padding``, ``value`` and class: the mode),
    of an image: the pads of its width, then height (two or four numbers); more pad the channels or the batch
    and are refused where they are not 0."""
    need(not s.arg.get("channels_last"), "a pad of a channels-last view (archc's pad pads an N x C x H x W map's "
                                         "height and width)")
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3, "a pad of other than an image (archc's pad pads an "
                                                       "N x C x H x W map's height and width)")
    m = s.module
    if m is not None:
        cls = type(m).__name__
        pads, value = getattr(m, "padding", None), float(getattr(m, "value", 0.0) or 0.0)
        mode = "reflect" if cls.startswith("Reflection") else "replicate" if cls.startswith("Replication") \
            else "constant"
    else:
        pads, mode, value = s.arg.get("pad"), s.arg.get("mode") or "constant", s.arg.get("value")
        value = 0.0 if value is None else value
    pads = list(pads) if isinstance(pads, (list, tuple)) else [pads] * 4 if isinstance(pads, int) else pads
    need(isinstance(pads, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in pads),
         f"pads {pads!r} (archc reads whole numbers known when the model is traced)")
    need(len(pads) % 2 == 0 and 2 <= len(pads) <= 8, f"{len(pads)} pads (an image's are 2 or 4 numbers)")
    need(not any(pads[4:]), f"pads {pads} that pad the channels or the batch (archc's pad pads the height "
                            "and width)")
    need(mode in MODES, f"mode {mode!r} (archc's pad is {', '.join(MODES)})")
    need(isinstance(value, (int, float)) and not isinstance(value, bool), f"a fill of {value!r}")
    return _fields([*pads[:4], 0, 0][:4], mode, float(value))


def _from_onnx(n: Any) -> dict | None:
    """Pad (opset 11 on: data, pads, constant_value, axes; before: the ``pads`` and ``value`` attributes) of an
    image's height and width: pads ``[N, C, H, W begins, N, C, H, W ends]``, or those of ``axes``. The one
    tensor input is the map (another, computed by the graph, is refused there), so an input without a constant
    is one the node does not give. The Pads the reader folds are not seen here (zeros that only a Conv reads, an
    edge or -inf Pad before a MaxPool: that op's own padding)."""
    need(len(n.shapes) == 1 and len(n.shapes[0]) == 3 and not n.last, "a Pad of other than an image "
                                                                     "(N x C x H x W), or pads the graph computes")
    mode = n.attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    ours = {v: k for k, v in ONNX_MODES.items()}
    need(mode in ours, f"mode {mode!r} (archc's pad is ONNX's {', '.join(ONNX_MODES.values())})")
    _, pads, fill, axes = [*n.consts, None, None, None, None][:4]
    pads = n.attrs.get("pads") if pads is None else pads.reshape(-1)
    need(pads is not None, "a Pad without pads")
    pads = [int(v) for v in pads]
    need(fill is None or getattr(fill, "size", 0) == 1, "a fill of more than one number")
    value = float(n.attrs.get("value", 0.0)) if fill is None else float(fill.reshape(-1)[0])
    axes = list(range(4)) if axes is None else [int(a) % 4 for a in axes.reshape(-1)]
    need(len(pads) == 2 * len(axes) and len(set(axes)) == len(axes), f"{len(pads)} pads for axes {axes}")
    begin, end = dict(zip(axes, pads[:len(axes)])), dict(zip(axes, pads[len(axes):]))
    need(not any(begin.get(k, 0) or end.get(k, 0) for k in (0, 1)),
         f"pads {pads} that pad the batch or the channels (archc's pad pads the height and width)")
    value = _onnx.f32(value, "a fill") if mode == "constant" else 0.0
    fields = _fields([begin.get(3, 0), end.get(3, 0), begin.get(2, 0), end.get(2, 0)], ours[mode], value)
    return fields if fields is not None else {"op": KIND}         # a Pad of no pixels: a copy of its input


_TORCH_ARGS = ("pad", "mode", "value")
_MODULES = ("ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d")

OP = Op(
    layers=(LayerOp(Pad, _lower),),
    # no arithmetic on the values (a copy into a larger map): element operations 0; timed like a copy of the
    # output (concat). Memory measured (tests/test_pad.py): no workspace, forward or backward (each writes its
    # output, the backward the input's gradient); constant keeps nothing for the backward pass, reflect and
    # replicate their input (see _saves)
    kinds=(OpDef(
        KIND, _shape, attrs=("left", "right", "top", "bottom", "value", "mode"), window=_window,
        elementwise=lambda a, i, o: 0, saves=_saves,
        latency=per_map(("concat",), lambda a: "concat", elements),
        torch=TorchCode(None, _call), style=Style("box", "#eef3e2", _detail)),),
    from_torch={"fn:pad": FromTorch(KIND, _from_torch, _TORCH_ARGS),
                **{cls: FromTorch(KIND, _from_torch, modules=("torch.nn",)) for cls in _MODULES}},
    from_onnx={"Pad": FromOnnx(_from_onnx)},
)
