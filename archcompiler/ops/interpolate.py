"""Nearest and bilinear resizing of an image (``op: interpolate``: F.interpolate, nn.Upsample, ONNX Resize)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from ..spec.layers import Bool, LayerBase, Name, Pair, PosFloat, PosInt, pair
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
    TooSmall,
    TorchCode,
    Window,
    fmt,
    image,
    need,
    one,
    per_map,
)

KIND = "interpolate"
MODES = ("nearest", "bilinear")

Factor = Union[PosInt, PosFloat]


class Interpolate(LayerBase):
    """Resizes an image (F.interpolate, nn.Upsample): nearest or bilinear, to a `size` or by a `scale`,
    whose output is floor(input x scale) as torch computes it (U-Net's and FPN's upsampling), or to the height
    and width of another layer's map (`size_of`: a segmentation head's logits upsampled to the image,
    `size_of: input`; DeepLabv3's pooled branch back to the map it pooled)."""

    op: Literal["interpolate"]
    scale: Factor | Annotated[list[Factor], Field(min_length=2, max_length=2)] | None = Field(
        None, description="the factor (or [h, w] factors): the output is floor(input x scale); torch's scale_factor")
    size: Pair | None = Field(None, description="the output's height and width (a number or [h, w]); torch's size")
    size_of: Name | None = Field(None, description="a layer (or `input`, the network's input) whose height and "
                                 "width the output takes: torch's size=y.shape[-2:]; the layer is read for its "
                                 "shape alone")
    mode: Literal["nearest", "bilinear"] = Field("nearest", description="nearest: each output pixel copies the "
                                                 "input pixel floor(position / scale) (with a size, the scale is "
                                                 "output / input); bilinear: the two nearest pixels along each axis, "
                                                 "weighted by distance")
    align_corners: Bool = Field(False, description="bilinear only: the corner pixels of input and output align "
                                                   "(torch's align_corners=True); false: their centres scale")

    @model_validator(mode="after")
    def _one_of_scale_and_size(self) -> Interpolate:
        given = [k for k in ("scale", "size", "size_of") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give one of 'scale' (a factor), 'size' (the output's height and width) and 'size_of' "
                             "(a layer whose height and width it takes)" + (", not several" if given else ""))
        if self.align_corners and self.mode != "bilinear":
            raise ValueError("align_corners is bilinear's: nearest has no corners to align (torch refuses it)")
        return self

    def input_names(self) -> list[str | None] | None:
        """With ``size_of``: the input (None: the previous layer) and the layer whose size it takes."""
        if self.size_of is None:
            return super().input_names()
        return [self.input, self.size_of]


def _number(v: Any) -> int | float:
    """2.0 -> 2; 1.5 stays."""
    v = float(v)
    return int(v) if v.is_integer() else v


def _lower(s: Interpolate) -> list:
    scale = None if s.scale is None else tuple(_number(v) for v in (s.scale if isinstance(s.scale, list)
                                                                     else (s.scale, s.scale)))
    return [("", KIND, {"size": None if s.size is None else pair(s.size), "scale": scale, "mode": s.mode,
                        "align_corners": s.align_corners, "size_of": s.size_of})]


def _out(a: Attrs, h: int, w: int) -> tuple[int, int]:
    """The output's height and width: the size, or floor(input x scale) (torch's, in double precision)."""
    if a["size"] is not None:
        return tuple(a["size"])
    out = []
    for n, f in zip((h, w), a["scale"]):
        v = float(n) * float(f)
        if not math.isfinite(v) or v > MAX_DIM:
            raise ShapeError(f"{KIND}: scale {f} makes {n} pixels {v:g} (at most {MAX_DIM})")
        out.append(math.floor(v))
    if min(out) < 1:
        raise TooSmall(f"{KIND}: the output would be {out[0]}x{out[1]}: the {h}x{w} input times scale "
                       f"{a['scale'][0]}x{a['scale'][1]} leaves no pixel")
    return out[0], out[1]


def _sized(a: Attrs, shapes: list[Shape]) -> tuple[int, int]:
    """The output's height and width for these inputs: the second input's (the layer ``size_of`` names, as
    written), else by _out."""
    if not a.get("size_of"):
        return _out(a, *image(KIND, shapes)[1:])
    if len(shapes) != 2:
        raise ShapeError(f"{KIND} with size_of takes two inputs (the map and the layer it takes the size of), "
                         f"got {len(shapes)}")
    image(KIND, shapes[:1])
    if len(shapes[1]) != 3:
        raise ShapeError(f"{KIND}: size_of names a layer of shape {fmt(shapes[1])}, which has no height and width "
                         "(it needs an image, H x W x C)")
    return shapes[1][1], shapes[1][2]


def _shape(a: Attrs, shapes: list[Shape]) -> Shape:
    return (shapes[0][0], *_sized(a, shapes))


def _window(a: Attrs, i: list[Shape]) -> Window:
    """Each output pixel reads one input pixel (nearest) or two neighbours along each axis (bilinear), so the
    kernel is 1 or 2 input pixels. The step between neighbouring output pixels is input / output pixels (with
    align_corners (input - 1) / (output - 1)), a fraction when upsampling, which a Window (whole pixels) cannot
    hold: it is rounded up, to 1 when upsampling. So the field of the op itself is exact, and what follows grows
    at the input's step, not the finer one: a receptive field an upper bound, never less than what is seen."""
    _, h, w = i[0]
    oh, ow = _sized(a, i)
    k = 2 if a["mode"] == "bilinear" else 1

    def step(n: int, o: int) -> int:
        spans = [-(-n // o)] + ([-(-(n - 1) // (o - 1))] if a["align_corners"] and o > 1 else [])
        return max(1, *spans)
    return Window((k, k), (step(h, oh), step(w, ow)), (0, 0))


def _exact_size(a: Attrs) -> bool:
    """Whether torch computes the same values from the static output size as from the scale: with a size
    given, or whole factors (input / output is then 1 / scale exactly), or align_corners (whose positions
    read the sizes alone); a fractional factor places pixels by 1 / scale, not by input / output."""
    return a["scale"] is None or a["align_corners"] or all(float(f).is_integer() for f in a["scale"])


def _options(a: Attrs) -> str:
    return f"mode='bilinear', align_corners={a['align_corners']}" if a["mode"] == "bilinear" else "mode='nearest'"


def _call(a: Attrs, x: list[str], m: str, ip: bool) -> str:
    """Without the input's shape: the size (the other layer's, read as torchvision reads it), or the scale factor."""
    how = f"size={x[1]}.shape[-2:]" if a.get("size_of") else f"size=({a['size'][0]}, {a['size'][1]})" \
        if a["size"] is not None else f"scale_factor=({float(a['scale'][0])!r}, {float(a['scale'][1])!r})"
    return f"F.interpolate({x[0]}, {how}, {_options(a)})"


def _shaped_call(a: Attrs, x: list[str], m: str, ip: bool, ins: list) -> str:
    """The static output size where it computes the same values as the scale (see _exact_size)."""
    if a.get("size_of") or not _exact_size(a) or not ins or len(ins[0]) != 3:
        return _call(a, x, m, ip)
    oh, ow = _out(a, *ins[0][1:])
    return f"F.interpolate({x[0]}, size=({oh}, {ow}), {_options(a)})"


def _detail(a: Attrs) -> str:
    if a.get("size_of"):
        how = f"to the size of {a['size_of']}"
    else:
        how = f"to {a['size'][0]}x{a['size'][1]}" if a["size"] is not None else \
            f"x{a['scale'][0]}" if a["scale"][0] == a["scale"][1] else f"x{a['scale'][0]}x{a['scale'][1]}"
    corners = " (align corners)" if a["align_corners"] else ""
    return f"{a['mode']} {how}{corners}"


# ----------------------------------------------------------------------------- import


def _fields(mode: str, align_corners: bool, size: Any = None, scale: Any = None) -> dict:
    fields: dict[str, Any] = {"op": KIND}
    if size is not None:
        fields["size"] = one(size)
    else:
        fields["scale"] = one(scale) if all(float(v).is_integer() for v in scale) else \
            (scale[0] if scale[0] == scale[1] else list(scale))
    if mode == "bilinear":
        fields["mode"] = "bilinear"
        if align_corners:
            fields["align_corners"] = True
    return fields


def _from_torch(s: Any) -> dict:
    """F.interpolate(x, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias), and
    nn.Upsample (its attributes: the same arguments)."""
    m = s.module
    arg = {k: getattr(m, k, None) for k in ("size", "scale_factor", "mode", "align_corners",
                                            "recompute_scale_factor")} if m is not None else dict(s.arg)
    need(len(s.shapes) == 1 and len(s.shapes[0]) == 3, "an interpolation of other than an image (archc's "
                                                       "interpolate resizes N x C x H x W tensors)")
    need(not arg.get("antialias"), "antialias=True (archc's interpolate does not low-pass filter)")
    mode = arg.get("mode") or "nearest"
    need(mode in MODES, f"mode {mode!r} (archc's interpolate is {' or '.join(MODES)})")
    size, factor = arg.get("size"), arg.get("scale_factor")
    need(size is not None or factor is not None, "neither a size nor a scale factor")
    _, h, w = s.shapes[0]
    if size is not None:
        size = list(size) if isinstance(size, (list, tuple)) else [size, size]
        need(len(size) == 2 and all(v is not None for v in size), f"size {size} (archc reads a height and width)")
    elif arg.get("recompute_scale_factor"):
        size = list(s.shape[1:])             # the scale makes the size, and the size places the pixels
    else:
        factor = list(factor) if isinstance(factor, (list, tuple)) else [factor, factor]
        need(len(factor) == 2, f"scale_factor {factor} (archc reads a height and width)")
        factor = [_number(v) for v in factor]
    return _fields(mode, bool(arg.get("align_corners")), size=size, scale=factor)


def _text(v: Any, default: str) -> str:
    v = default if v is None else v
    return v.decode() if isinstance(v, bytes) else str(v)


def _coordinates(n: Any, mode: str) -> tuple[str, bool]:
    """ONNX's mode and coordinate_transformation_mode -> archc's mode and align_corners, or refused."""
    how = _text(n.attrs.get("coordinate_transformation_mode"), "half_pixel")
    if mode == "nearest":
        nearest = _text(n.attrs.get("nearest_mode"), "round_prefer_floor")
        need(how == "asymmetric" and nearest == "floor",
             f"nearest resizing with coordinate_transformation_mode {how!r} and nearest_mode {nearest!r} (torch's "
             "nearest, archc's, is 'asymmetric' with 'floor': the input pixel floor(position / scale))")
        return "nearest", False
    need(mode == "linear", f"mode {mode!r} (archc's interpolate is nearest or bilinear: ONNX's nearest or linear)")
    if how == "align_corners":
        return "bilinear", True
    need(how in ("half_pixel", "pytorch_half_pixel"),
         f"linear resizing with coordinate_transformation_mode {how!r} (torch's bilinear is 'half_pixel', or "
         "'align_corners' with align_corners=True)")
    return "bilinear", False


def _resize(n: Any) -> dict:
    """Resize (opset 11 on: X, roi, scales, sizes; opset 10's X, scales read as Upsample's). The input's shape
    may be unknown to ONNX's shape inference (after a Resize to computed sizes): what needs it is checked
    where it is known."""
    need(len(n.shapes) == 1, "scales or sizes the graph computes (archc reads constant ones)")
    need(len(n.shapes[0]) == 3 and not n.last, "a Resize of other than an image (N x C x H x W)")
    if len(n.consts) == 2:
        return _upsample(n)
    need(not int(n.attrs.get("antialias", 0)), "antialias (archc's interpolate does not low-pass filter)")
    need(_text(n.attrs.get("keep_aspect_ratio_policy"), "stretch") == "stretch",
         "a keep_aspect_ratio_policy other than 'stretch'")
    consts = [*n.consts, None, None, None][:4]
    scales, sizes = (None if v is None or getattr(v, "size", 0) == 0 else [float(x) for x in v.reshape(-1)]
                     for v in consts[2:4])
    need((scales is None) != (sizes is None), "both scales and sizes, or neither")
    axes = n.attrs.get("axes")
    axes = list(range(4)) if axes is None else [int(x) % 4 for x in axes]
    given = scales if scales is not None else sizes
    need(len(given) == len(axes) and len(set(axes)) == len(axes), f"{len(given)} scales or sizes for axes {axes}")
    full = dict(zip(axes, given))
    c, h, w = n.shapes[0]
    known = min(n.shapes[0]) >= 1
    mode, corners = _coordinates(n, _text(n.attrs.get("mode"), "nearest"))
    if scales is not None:
        need(full.get(0, 1) == 1 and full.get(1, 1) == 1, f"scales {scales} that resize the batch or channels")
        factor = [_onnx.f32(full.get(2, 1), "a scale"), _onnx.f32(full.get(3, 1), "a scale")]
        need(min(factor) > 0, f"scales {scales} (each must be positive)")
        fields = _fields(mode, corners, scale=[_number(v) for v in factor])
        out = _out({"size": None, "scale": factor}, h, w) if known else None
    else:
        need(2 in full and 3 in full, f"sizes {sizes} without the height and width")
        need(not known or full.get(1, c) == c, f"sizes {sizes} that change the {c} channels")
        out = (int(full[2]), int(full[3]))
        need(min(out) >= 1 and max(out) <= MAX_DIM, f"sizes {sizes}")
        fields = _fields(mode, corners, size=list(out))
    if _text(n.attrs.get("coordinate_transformation_mode"), "half_pixel") == "pytorch_half_pixel":
        need(out is not None and min(out) > 1, "pytorch_half_pixel to a size of 1, or to an unknown size (ONNX "
                                               "reads pixel 0 there, torch the centre)")
    need(out is None or len(n.shape) != 3 or min(n.shape) < 1 or tuple(n.shape[1:]) == tuple(out),
         f"an output of {'x'.join(map(str, n.shape[1:]))} where the {'scales' if scales else 'sizes'} make "
         f"{out[0] if out else 0}x{out[1] if out else 0}")
    return fields


def _upsample(n: Any) -> dict:
    """ONNX's Upsample (opsets 7 to 9; Resize of opset 10): nearest is the input pixel floor(position / scale)
    when it enlarges (onnxruntime rounds up when it shrinks); its linear mode places pixels at position / scale,
    which no torch bilinear mode does."""
    need(len(n.shapes) == 1 and len(n.shapes[0]) == 3 and not n.last, "an Upsample of other than an image")
    mode = _text(n.attrs.get("mode"), "nearest")
    need(mode == "nearest", f"mode {mode!r} (ONNX Upsample's linear places pixels at position / scale: torch's "
                            "bilinear, archc's, at their centres)")
    scales = n.attrs.get("scales") if len(n.consts) < 2 or n.consts[1] is None else n.consts[1].reshape(-1)
    need(scales is not None and len(scales) == 4, "an Upsample without 4 scales")
    scales = [float(v) for v in scales]
    need(scales[0] == 1 and scales[1] == 1, f"scales {scales} that resize the batch or channels")
    factor = [_onnx.f32(scales[2], "a scale"), _onnx.f32(scales[3], "a scale")]
    need(min(factor) >= 1, f"scales {scales} that shrink (onnxruntime's nearest rounds up there, torch's down)")
    return _fields("nearest", False, scale=[_number(v) for v in factor])


_TORCH_ARGS = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")

OP = Op(
    layers=(LayerOp(Interpolate, _lower),),
    # element operations per output pixel: nearest copies (0: no arithmetic on the values); bilinear sums its
    # four neighbours weighted by distance, 4 multiplies and 3 adds (the weights are made once per row and
    # column): 7. Timed like a copy of the output (concat), bilinear like a 2 x 2 average pool (four reads per
    # output pixel). Memory measured (tests/test_interpolate.py): no workspace; autograd keeps no tensor (the
    # backward reads the sizes alone)
    kinds=(OpDef(
        KIND, _shape, attrs=("size", "scale", "mode", "align_corners", "size_of"), window=_window,
        elementwise=lambda a, i, o: 7 * math.prod(o) if a["mode"] == "bilinear" else 0,
        latency=per_map(("concat", "avg_pool"), lambda a: "avg_pool" if a["mode"] == "bilinear" else "concat",
                        lambda a, i, o: (4 if a["mode"] == "bilinear" else 1) * math.prod(o)),
        shape_inputs=lambda a: (1,) if a.get("size_of") else (),
        torch=TorchCode(None, _call, shaped_call=_shaped_call),
        style=Style("box", "#dcecf7", _detail)),),
    from_torch={"fn:interpolate": FromTorch(KIND, _from_torch, _TORCH_ARGS),
                "Upsample": FromTorch(KIND, _from_torch, modules=("torch.nn", "timm")),
                "UpsamplingNearest2d": FromTorch(KIND, _from_torch, modules=("torch.nn",)),
                "UpsamplingBilinear2d": FromTorch(KIND, _from_torch, modules=("torch.nn",))},
    from_onnx={"Resize": FromOnnx(_resize), "Upsample": FromOnnx(_upsample)},
)
