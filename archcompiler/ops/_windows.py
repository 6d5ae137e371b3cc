"""The arithmetic of a window sliding over one axis of a map (PyTorch's output size, TensorFlow's 'same'
padding) and the torch call that pads a map: what convolutions, pools and pads share."""

from __future__ import annotations


def out_size(size: int, k: int, s: int, before: int, after: int, d: int, ceil: bool = False) -> int:
    """PyTorch's output size of a window of ``k`` (dilation ``d``), stride ``s`` over ``size``
    padded by ``before`` and ``after``."""
    span = size + before + after - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + before:
        out -= 1           # PyTorch: the last window must start inside the input or left padding
    return out


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's and Keras's 'same' padding of one axis (before, after): the output is ceil(size / s),
    the total pad ``max((ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)``, the odd pixel after. At
    stride 1 it is PyTorch's ``padding='same'``."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def pad_call(x: str, pads: tuple[tuple[int, int], tuple[int, int]], value: str = "") -> str:
    """``F.pad`` of a map by ((top, bottom), (left, right)): torch's order is left, right, top, bottom."""
    (t, b), (left, r) = pads
    return f"F.pad({x}, ({left}, {r}, {t}, {b}){', value=' + value if value else ''})"
