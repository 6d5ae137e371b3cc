"""The value of one node the exporters compute on constants and static sizes (an op of ``fold._FOLDED``), as
numpy's exact counterpart of the op, its attributes and inputs checked first and every new array bounded;
None where the node is not computed here (the walk reads it, or refuses it by name). ``fold._fold`` calls
``_folded`` for each node in the file's order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .files import _onnx

MAX_GIVEN = 4096        # the constants shape inference is given whole (their values may be sizes); the rest by shape
MAX_RANK = 64           # the numbers of a shape, of axes or of a Slice's bounds that are read
MAX_CHAIN_ELEMENTS = 2 ** 22       # the positions a reshape chain is checked on (a 32 MB index)
# the number types a Cast is folded to: TensorProto.DataType -> numpy's name
_CASTS = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
          11: "float64"}


def _size(shape: tuple[int, ...]) -> int:
    """The number of elements of a tensor of ``shape``."""
    out = 1
    for d in shape:
        out *= d
    return out


def _folded(kind: str, attrs: dict[str, Any], ins: list[str], consts: dict[str, Any],
            shapes: dict[str, tuple[int, ...]]) -> Any:
    """The value of one node of _FOLDED (its attributes, its input names), or None where it is not computed here:
    Shape, Size and ConstantOfShape from what is known of their input; every other op where all its inputs are
    constants, by the op's function of _FOLD_ONE (an element-wise op of two constants otherwise)."""
    if kind in ("Shape", "Size"):
        return _shape_value(kind, attrs, ins, shapes)
    if kind == "ConstantOfShape":
        return _filled(attrs, ins, consts)
    if not ins or any(i not in consts for i in ins if i):
        return None
    v = [consts[i] if i else None for i in ins]
    return _FOLD_ONE.get(kind, _elementwise)(kind, attrs, v)


def _ints(v: Any) -> list[int] | None:
    """A constant of a few integers (sizes, axes, bounds: at most MAX_RANK) as a list; None otherwise."""
    ok = v is not None and v.dtype.kind in "iu" and v.ndim <= 1 and v.size <= MAX_RANK
    return [int(x) for x in v.reshape(-1)] if ok else None


def _axis(a: int, rank: int) -> int:
    """The axis ``a`` (negative: from the end) of a tensor of ``rank`` as 0 .. rank - 1; ValueError where none."""
    if not -rank <= a < rank:
        raise ValueError(f"axis {a} of a rank {rank} tensor")
    return a % rank


def _shape_value(kind: str, attrs: dict[str, Any], ins: list[str], shapes: dict[str, tuple[int, ...]]) -> Any:
    """Shape (its start and end clamped as ONNX does) or Size of an input whose shape is fully known."""
    import numpy as np

    full = shapes.get(ins[0]) if len(ins) == 1 else None
    if full is None or min(full, default=0) < 0 or len(shapes.get(ins[0], ())) != len(full):
        return None
    if kind == "Size":
        return np.asarray(_size(full), dtype=np.int64)
    rank = len(full)
    start, end = int(attrs.get("start", 0)), int(attrs.get("end", rank))
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    return np.asarray(full[start:end], dtype=np.int64)


def _filled(attrs: dict[str, Any], ins: list[str], consts: dict[str, Any]) -> Any:
    """ConstantOfShape: a tensor of a constant shape (at most MAX_CHAIN_ELEMENTS numbers) filled with its value."""
    import numpy as np

    dims = _ints(consts.get(ins[0])) if len(ins) == 1 else None
    t = attrs.get("value")
    fill = np.zeros(1, np.float32) if t is None else _onnx().numpy_helper.to_array(t).reshape(-1)
    if dims is None or min(dims, default=0) < 0 or fill.size != 1 or _size(tuple(dims)) > MAX_CHAIN_ELEMENTS:
        return None
    return np.full(dims, fill[0], dtype=fill.dtype)


def _identity(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Identity: its one input."""
    return v[0] if len(v) == 1 else None


def _gather(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Gather along an axis, each index within the axis (negative: from the end)."""
    import numpy as np

    x = v[0]
    idx = v[1] if len(v) == 2 else None
    if idx is None or idx.dtype.kind not in "iu" or x.ndim < 1:
        return None
    ax = _axis(int(attrs.get("axis", 0)), x.ndim)
    n = x.shape[ax]
    if idx.size and (idx.min() < -n or idx.max() >= n) or idx.size * (x.size // max(n, 1)) > MAX_CHAIN_ELEMENTS:
        return None
    return np.take(x, np.where(idx < 0, idx + n, idx).astype(np.int64), axis=ax)


def _squeezed(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Unsqueeze and Squeeze, their axes an attribute (before opset 13) or an input."""
    x = v[0]
    axes = [int(a) for a in attrs["axes"]] if "axes" in attrs else _ints(v[1]) if len(v) > 1 else None
    if kind == "Unsqueeze":
        rank = x.ndim + len(axes or [])
        axes = sorted(_axis(a, rank) for a in axes or [])
        if not axes or len(set(axes)) != len(axes):
            return None
        return x.reshape(_unsqueezed(x.shape, axes))
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = sorted({_axis(a, x.ndim) for a in axes})
    if any(x.shape[a] != 1 for a in axes):
        return None
    return x.reshape([d for k, d in enumerate(x.shape) if k not in axes])


def _concat(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Concat of constants of one type and rank."""
    import numpy as np

    x = v[0]
    if len({a.dtype for a in v}) != 1 or len({a.ndim for a in v}) != 1 or x.ndim < 1:
        return None
    return np.concatenate(v, axis=_axis(int(attrs["axis"]), x.ndim))


def _cast(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Cast to a type of _CASTS; floats to integers only where each is finite and within the type."""
    import numpy as np

    x = v[0]
    to = _CASTS.get(int(attrs.get("to", 0)))
    if to is None or len(v) != 1 or x.dtype.kind not in "biuf":
        return None
    if np.dtype(to).kind in "iu" and x.dtype.kind == "f":
        info = np.iinfo(to)
        if not np.all(np.isfinite(x)) or x.size and (x.min() < info.min or x.max() > info.max):
            return None
    return x.astype(to)


def _sliced(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Slice, its bounds attributes (before opset 10) or inputs, each clamped as ONNX does for its step's sign."""
    import numpy as np

    x = v[0]
    if "starts" in attrs:           # (before opset 10: attributes)
        starts, ends = [int(a) for a in attrs["starts"]], [int(a) for a in attrs["ends"]]
        axes = [int(a) for a in attrs.get("axes", range(len(starts)))]
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(v[1]) if len(v) > 1 else None, _ints(v[2]) if len(v) > 2 else None
        axes = _ints(v[3]) if len(v) > 3 and v[3] is not None else list(range(len(starts or [])))
        steps = _ints(v[4]) if len(v) > 4 and v[4] is not None else [1] * len(starts or [])
    if starts is None or ends is None or axes is None or steps is None \
            or not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        return None
    axes = [_axis(a, x.ndim) for a in axes]
    if len(set(axes)) != len(axes):
        return None
    out = x
    for a, start, end, step in zip(axes, starts, ends, steps):
        n = x.shape[a]
        if step > 0:
            lo, hi = (max(0, min(n, p + n if p < 0 else p)) for p in (start, end))
        elif n == 0:
            return None
        else:
            lo = max(0, min(n - 1, start + n if start < 0 else start))
            hi = max(-1, min(n - 1, end + n if end < 0 else end))
        out = np.take(out, np.arange(lo, hi, step, dtype=np.int64), axis=a)
    return out


def _reshaped(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Reshape to a constant shape (0: the input's size there, unless allowzero; one -1: the rest)."""
    x = v[0]
    target = _ints(v[1]) if len(v) == 2 else None
    if target is None or target.count(-1) > 1 or min(target, default=0) < -1:
        return None
    if not attrs.get("allowzero", 0):
        if any(t == 0 and k >= x.ndim for k, t in enumerate(target)):
            return None
        target = [x.shape[k] if t == 0 else t for k, t in enumerate(target)]
    known = _size(tuple(t for t in target if t != -1))
    if -1 in target:
        if known == 0 or x.size % known:
            return None
        target[target.index(-1)] = x.size // known
    return x.reshape(target) if _size(tuple(target)) == x.size else None


def _transposed(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Transpose by its perm (default: the axes reversed)."""
    import numpy as np

    x = v[0]
    perm = [int(p) for p in attrs.get("perm", range(x.ndim - 1, -1, -1))]
    return np.ascontiguousarray(x.transpose(perm)) if sorted(perm) == list(range(x.ndim)) else None


def _unary(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Neg (of numbers) and Sqrt (of floats) of at most MAX_GIVEN numbers; an overflow or a NaN is not folded."""
    import numpy as np

    x = v[0]
    if len(v) != 1 or x.dtype.kind not in "if" or kind == "Sqrt" and x.dtype.kind != "f" or x.size > MAX_GIVEN:
        return None
    with np.errstate(all="raise"):
        return -x if kind == "Neg" else np.sqrt(x)


def _where(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Where of a boolean condition and two values of one type."""
    import numpy as np

    if len(v) != 3 or v[0].dtype != np.bool_ or v[1].dtype != v[2].dtype \
            or _size(np.broadcast_shapes(*(a.shape for a in v))) > MAX_CHAIN_ELEMENTS:
        return None
    return np.where(*v)


def _expanded(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """Expand to a constant shape, broadcast as numpy does."""
    import numpy as np

    x = v[0]
    dims = _ints(v[1]) if len(v) == 2 else None
    if dims is None or min(dims, default=1) < 0:
        return None
    shape = np.broadcast_shapes(x.shape, tuple(dims))
    if _size(shape) > MAX_CHAIN_ELEMENTS:
        return None
    return np.array(np.broadcast_to(x, shape))


def _elementwise(kind: str, attrs: dict[str, Any], v: list[Any]) -> Any:
    """An element-wise op (Equal, Add, Sub, Mul, Div, Mod) on two constants of one type (ONNX broadcasts as numpy
    does); on floats, only up to MAX_GIVEN numbers (sizes and scalars: a product of weights is left to the steps
    that read it back, Swin V2's position MLP); integer division truncated toward zero; a division by zero, an
    overflow or another op is not folded."""
    import numpy as np

    x = v[0]
    if len(v) != 2 or v[0].dtype != v[1].dtype or x.dtype.kind not in "biuf" \
            or _size(np.broadcast_shapes(x.shape, v[1].shape)) > (MAX_GIVEN if x.dtype.kind == "f" else
                                                                   MAX_CHAIN_ELEMENTS):
        return None
    a, b = v
    if kind == "Equal":
        return np.equal(a, b)
    if x.dtype.kind == "b":
        return None
    with np.errstate(all="raise"):
        if kind in ("Add", "Sub", "Mul"):
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[kind](a, b)
        if kind == "Div":
            if x.dtype.kind == "f":
                return np.divide(a, b)
            if np.any(b == 0):
                return None
            q = np.abs(a) // np.abs(b)            # integers: the quotient truncated toward zero
            return np.where((a < 0) != (b < 0), -q, q).astype(x.dtype)
        if kind == "Mod":
            if np.any(b == 0):
                return None
            if attrs.get("fmod", 0):
                return np.fmod(a, b)
            return np.mod(a, b) if x.dtype.kind in "iu" else None
    return None


# how each op of _FOLDED (other than Constant, Shape, Size and ConstantOfShape) is computed from its constant
# inputs: (op type, attributes, the inputs' values) -> the value, or None where it is not folded
_FOLD_ONE: dict[str, Callable[[str, dict[str, Any], list[Any]], Any]] = {
    "Identity": _identity, "Gather": _gather, "Unsqueeze": _squeezed, "Squeeze": _squeezed, "Concat": _concat,
    "Cast": _cast, "Slice": _sliced, "Reshape": _reshaped, "Transpose": _transposed, "Neg": _unary,
    "Sqrt": _unary, "Where": _where, "Expand": _expanded}


def _unsqueezed(shape: tuple[int, ...], axes: list[int]) -> list[int]:
    """The shape with a 1 inserted at each of ``axes`` (positions in the output)."""
    dims = iter(shape)
    return [1 if k in axes else next(dims) for k in range(len(shape) + len(axes))]
