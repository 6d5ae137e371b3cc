"""The window patterns of the view patterns (see :mod:`.views`): MaxViT's window and grid partitions and
their way back, Swin's windows, and the roll of a shifted window."""

from __future__ import annotations

from typing import Any

from .tracer import _flat_args, _resolved


def _partition_step(step: str, node: Any, src: Any, state: Any, shape: tuple, by_node: dict, pending: dict) -> Any:
    """MaxViT's WindowPartition (N x C x H x W to N x G x P^2 x C: G windows of P x P positions), the swap
    of its last two axes that makes it a grid (G' = P^2 groups of positions H / P apart), and the way back
    (WindowDepartition): True when the node is a step (its state in ``pending``), the layer's value again
    at the end, None when it is no such step. Per-position ops read the cut map as the map itself."""
    dims = [d for d in _flat_args([*node.args[1:], *node.kwargs.values()]) if isinstance(d, int)]
    kind = state[0] if state is not None else None
    done = _maxxvit_step(step, node, state, shape, dims, pending)
    if done is not None:
        return done
    if step == "reshape" and state is None and src in by_node and len(shape) == 5:
        c = tuple(src.meta["tensor_meta"].shape[1:])
        if len(c) == 3 and shape[0] == c[0] and shape[1] * shape[2] == c[1] and shape[3] * shape[4] == c[2] \
                and shape[2] == shape[4]:
            pending[node] = ("cut", by_node[src], shape[2])
            return True
    if step == "permute" and kind == "cut" and dims == [0, 2, 4, 3, 5, 1]:
        pending[node] = ("cut2", *state[1:])
        return True
    if step == "reshape" and kind == "cut2" and len(shape) == 3 and shape[1] == state[2] ** 2:
        pending[node] = ("part", state[1], False, state[2])
        return True
    if step == "swap" and kind == "part" and sorted(d % 4 for d in dims) == [1, 2]:
        pending[node] = ("part", state[1], not state[2], state[3])
        return True
    if step == "reshape" and kind == "part" and not state[2] and len(shape) == 5 and shape[2] == shape[3] == state[3]:
        pending[node] = ("uncut", state[1], state[3])
        return True
    if step == "permute" and kind == "uncut" and dims == [0, 5, 1, 3, 2, 4]:
        pending[node] = ("uncut2", *state[1:])
        return True
    if step == "reshape" and kind == "uncut2" and len(shape) == 3:
        by_node[node] = state[1]
        return True
    return None


def _maxxvit_step(step: str, node: Any, state: Any, shape: tuple, dims: list, pending: dict) -> Any:
    """timm's MaxViT partition of its channels-last map (timm/models/maxxvit.py), where it differs from the
    window steps of timm's Swin (which read its window_partition, "wcut" to "wcut3", and window_reverse's
    permute and view back): the grid (grid_partition: a view to N x G x H/G x G x W/G x C, read first as a
    window cut of H/G, a permute (0, 2, 4, 1, 3, 5) and a view to N' x G x G x C: the state MaxViT's grid has,
    ("part", layer, True, H / G)), the view back of the attention's windows (window_reverse's first view) and
    of its grid (grid_reverse: a view, a permute (0, 3, 1, 4, 2, 5), a view to N x H x W x C). True when the
    node is a step, None when it is no such step."""
    kind = state[0] if state is not None else None
    if step == "permute" and kind == "wcut" and not state[2] and dims == [0, 2, 4, 1, 3, 5]:
        (h, w), p = state[4], state[3]
        if h == w and h % p == 0:               # a square grid of G x G positions p apart
            pending[node] = ("gcut", state[1], p, h // p)
            return True
    if step == "reshape" and kind == "gcut" and shape[:2] == (state[3], state[3]) and len(shape) == 3:
        pending[node] = ("part", state[1], True, state[2])
        return True
    if step == "reshape" and kind == "wcut3" and not state[2] and len(shape) == 5:
        win, (h, w) = state[3], state[4]
        if shape[:4] == (h // win, w // win, win, win):
            pending[node] = ("wback2", *state[1:])
            return True
    if step == "reshape" and kind == "part" and state[2] and len(shape) == 5 and shape[:2] == (state[3], state[3]) \
            and shape[2] == shape[3]:
        pending[node] = ("guncut", state[1])
        return True
    if step == "permute" and kind == "guncut" and dims == [0, 3, 1, 4, 2, 5]:
        pending[node] = ("guncut2", state[1])
        return True
    if step == "reshape" and kind == "guncut2" and len(shape) == 3:
        pending[node] = ("last", state[1])
        return True
    return None


def _window_step(step: str, node: Any, src: Any, state: Any, shape: tuple, pending: dict, sizes: set) -> Any:
    """timm's Swin block on its channels-last map: the cyclic shift (torch.roll by -s along H and W), the cut
    into w x w windows (window_partition: a view to N x H/w x w x W/w x w x C, a permute, views to N' x w x w x C
    and N' x w^2 x C), and the way back (window_reverse, then the roll by s); and the map as H * W rows
    (x.reshape(N, -1, C)) and back. True when the node is a step (its state in ``pending``), None when it is
    no such step. The window attention reads the windows ("windows": the layer, the shift, the window, the
    map's H and W); per-position ops read the rows as the map."""
    kind, layer = state[0], state[1] if len(state) > 1 else None
    here = _full_shape(src)[1:]
    if step == "roll":
        shifts, dims = _roll_args(node, sizes)
        if dims not in ((1, 2), (-3, -2)) or len(here) != 3 or len(set(shifts)) != 1:
            return None
        if kind == "last" and shifts[0] < 0:
            pending[node] = ("rolled", layer, -shifts[0])
            return True
        if kind == "unrolled" and shifts[0] == state[2]:
            pending[node] = ("last", layer)
            return True
        return None
    dims = [d for d in _flat_args([*node.args[1:], *node.kwargs.values()]) if isinstance(d, int)]
    if step == "permute" and kind in ("wcut", "wback2") and dims == [0, 1, 3, 2, 4, 5]:
        pending[node] = ("wcut2" if kind == "wcut" else "wback3", *state[1:])
        return True
    if step != "reshape":
        return None
    if kind in ("last", "rolled") and len(here) == 3 and len(shape) == 5 and shape[1] == shape[3] \
            and shape[0] * shape[1] == here[0] and shape[2] * shape[3] == here[1] and shape[4] == here[2]:
        pending[node] = ("wcut", layer, state[2] if kind == "rolled" else 0, shape[1], here[:2])
        return True
    if kind == "last" and len(here) == 3 and shape == (here[0] * here[1], here[2]):
        pending[node] = ("rows", layer)
        return True
    if kind == "rows" and len(here) == 2 and len(shape) == 3 and shape[0] * shape[1] == here[0] \
            and shape[2] == here[1]:
        pending[node] = ("last", layer)
        return True
    if len(state) < 5:
        return None
    win, (h, w) = state[3], state[4]
    c = shape[-1]
    steps = {("wcut2", (win, win, c)): "wcut3", ("wcut3", (win * win, c)): "windows",
             ("windows", (win, win, c)): "wback", ("wback", (h // win, w // win, win, win, c)): "wback2"}
    if (kind, shape) in steps:
        pending[node] = (steps[kind, shape], *state[1:])
        return True
    if kind == "wback3" and shape == (h, w, c):
        pending[node] = ("unrolled", layer, state[2]) if state[2] else ("last", layer)
        return True
    return None


def _roll_args(node: Any, sizes: set) -> tuple[tuple, tuple]:
    """torch.roll's shifts and dims as tuples of ints (empty where they are not)."""
    args = [*node.args[1:3]]
    shifts = _resolved(node.kwargs.get("shifts", args[0] if args else ()), sizes)
    dims = _resolved(node.kwargs.get("dims", args[1] if len(args) > 1 else ()), sizes)
    shifts, dims = _as_tuple(shifts), _as_tuple(dims)
    ok = all(isinstance(v, int) for v in (*shifts, *dims)) and len(shifts) == len(dims)
    return (shifts, dims) if ok else ((), ())


def _full_shape(node: Any) -> tuple:
    """A node's tensor shape, batch included; () where it gives no one tensor (a split's parts)."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else ()


def _as_tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)
