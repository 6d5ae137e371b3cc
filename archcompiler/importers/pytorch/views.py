"""The view patterns, read as small state machines over the calls: channel shuffle and split, MaxViT's and
Swin's window partitions and their way back and the roll of a shifted window (in :mod:`.windows`), the patch
and token layouts, branches held as one tensor, and the arithmetic on sizes they read."""

from __future__ import annotations

import operator
from typing import Any

from ...ops import FROM_TORCH
from ...ops import KINDS as OPS
from .calls import Seen
from .tracer import _flat_args, _is_node_list, _resolved
from .windows import _full_shape, _partition_step, _window_step


def _keeps_all(step: str, node: Any, src: Any, sizes: set) -> bool:
    """Whether ``F.pad(x, pads)`` pads nothing (every pad 0) or ``x[a, b, ...]`` takes every element
    (slices from the start, past the end, step 1): the value passes unchanged."""
    args = [_resolved(a, sizes) for a in node.args[1:]]
    if step == "pad":
        pads = node.kwargs.get("pad", args[0] if args else None)
        pads = _resolved(pads, sizes)
        return isinstance(pads, (list, tuple)) and all(isinstance(p, int) and p == 0 for p in pads)
    full = _full_shape(src)
    index = args[0] if args else None
    index = index if isinstance(index, tuple) else (index,)
    return 0 < len(index) <= len(full) and all(
        isinstance(i, slice) and i.start in (None, 0) and i.step in (None, 1)
        and (i.stop is None or isinstance(i.stop, int) and i.stop >= n) for i, n in zip(index, full))


# the views of a layer's output that per-position ops read as the layer itself: channels-last (x.permute(0, 2,
# 3, 1), state ("last", layer)), cut into windows or a grid (MaxViT's partition, ("part", layer, grid, P)), and
# a C x 1 x 1 map flattened, as a LayerNorm reads it (("flat", layer): what it gives is flat again), and MobileViT's
# patch groups (("patches", layer, p, ...), see _patch_step), and a sequence's tokens flattened into the batch
# (("batched", layer), see _batched_step)
_VIEWS = ("last", "part", "flat", "windows", "rows", "wcut3", "patches", "batched")


def _after_earlier_cat(node: Any, ins: list, cats: dict) -> list:
    """DenseNet concatenates the list of all earlier outputs in every layer (torch.cat(features, 1)): a
    concatenation whose inputs start with all the inputs of an earlier one reads that one instead, then
    the rest (the same values), so every layer computes the same as the one before it."""
    best: tuple = ()
    for earlier in cats:
        if len(best) < len(earlier) < len(ins) and tuple(ins[:len(earlier)]) == earlier:
            best = earlier
    cats[tuple(ins)] = node
    return [cats[best], *ins[len(best):]] if best else ins


def _flat_map(a: Any, by_node: dict, item_of: dict, pending: dict) -> tuple[list, list]:
    """A LayerNorm of a flattened C x 1 x 1 map (MaxViT's classifier) normalises the map's channels: it reads
    the map, as its channels-last view (the spec's linear after it flattens)."""
    made = item_of.get(by_node.get(a))          # a view that makes a flat vector of the map: a flatten
    if made is not None and OPS[made.kind].alias == "view" and len(made.shape) == 1 and len(made.inputs) == 1 \
            and len(made.in_shape) == 3 and made.in_shape[1:] == (1, 1):
        view = ("flat", a)
        pending[view] = ("flat", made.inputs[0])
        return [view], [view]
    return [a], []


def _patch_step(step: str, node: Any, src: Any, state: Any, by_node: dict, pending: dict, sizes: set) -> Any:
    """MobileViT's unfold of an N x C x H x W map into p x p patches (timm's MobileVitBlock: a reshape to N C H/p x
    p x W/p x p, transpose(1, 2), a reshape to N x C x S x p^2 (S = H/p W/p patches), transpose(1, 3), a reshape
    to N p^2 x S x C: p^2 sequences, one per offset within the patch, of the S positions at that offset), and its
    fold back, each step the exact inverse. Between them the sequences are read as the map ("patches": the
    layer, p, N and the map's C x H x W): per-token ops are per-position ops on it, and attention on them is
    attention among the positions p apart (the ops' ``patches:`` entries). True when the node is a step (its
    state in ``pending``), None when it is no such step; batch sizes are the traced batch's (sizes are numbers)."""
    full, here = _full_shape(node), _full_shape(src)
    kind = state[0] if state is not None else None
    if step == "reshape" and state is None and src in by_node and len(here) == 4 and len(full) == 4:
        n, c, h, w = here
        p = full[1]
        if p > 1 and h % p == 0 and w % p == 0 and full == (n * c * (h // p), p, w // p, p):
            pending[node] = ("pcut1", by_node[src], p, n, (c, h, w))
            return True
        return None
    if state is None or kind not in _PATCH_STEPS or len(state) != 5:
        return None
    p, n, (c, h, w) = state[2], state[3], state[4]
    s = (h // p) * (w // p)
    if step == "swap":
        dims = sorted(int(_resolved(d, sizes)) % len(here) for d in [*node.args[1:], *node.kwargs.values()][:2])
        want = _PATCH_STEPS[kind]
        if want[0] != "swap" or dims != list(want[1]):
            return None
    elif _PATCH_STEPS[kind][0] != "reshape":
        return None
    shapes = {"pcut1": (n * c * (h // p), w // p, p, p), "pcut2": (n, c, s, p * p), "pcut3": (n, p * p, s, c),
              "pcut4": (n * p * p, s, c), "patches": (n, p * p, s, c), "pfold1": (n, c, s, p * p),
              "pfold2": (n * c * (h // p), w // p, p, p), "pfold3": (n * c * (h // p), p, w // p, p),
              "pfold4": (n, c, h, w)}
    if full != shapes[kind]:
        return None
    if kind == "pfold4":
        by_node[node] = state[1]            # the map again: the layer the sequences last were
        return True
    pending[node] = (_PATCH_NEXT[kind], *state[1:])
    return True


# MobileViT's unfold and fold (_patch_step): the step each state takes next (a swap of which dims, or a reshape),
# and the state it leads to
_PATCH_STEPS = {"pcut1": ("swap", (1, 2)), "pcut2": ("reshape", ()), "pcut3": ("swap", (1, 3)),
                "pcut4": ("reshape", ()), "patches": ("reshape", ()), "pfold1": ("swap", (1, 3)),
                "pfold2": ("reshape", ()), "pfold3": ("swap", (1, 2)), "pfold4": ("reshape", ())}
_PATCH_NEXT = {"pcut1": "pcut2", "pcut2": "pcut3", "pcut3": "pcut4", "pcut4": "patches", "patches": "pfold1",
               "pfold1": "pfold2", "pfold2": "pfold3", "pfold3": "pfold4"}


def _view_step(step: str, node: Any, ins: list, meta: Any, by_node: dict, pending: dict, sizes: set) -> Any:
    """One step of a channel shuffle or split (see VIEW_STEPS): True when the node is absorbed (its state
    in ``pending``, or a size in ``sizes``), the finished layer's (fields, input) when the pattern is
    complete (fields, input, view: its output held as that view, ``"last"``: channels-last), None when it
    is no such step (the reverse table then decides)."""
    shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None
    if step == "size":
        if shape is None or not ins or all(a in sizes or a not in by_node and a not in pending for a in ins):
            sizes.add(node)
            return True
        return None
    src = ins[0] if ins else None
    state = pending.get(src)
    if step == "same" and state is not None:
        pending[node] = state
        return True
    if step in ("reshape", "swap") and shape is not None and src is not None:
        done = _patch_step(step, node, src, state, by_node, pending, sizes)
        if done is not None:
            return done
    if step in ("pad", "pick") and src is not None and (state is not None or src in by_node) \
            and _keeps_all(step, node, src, sizes):
        if state is not None:          # F.pad by zero pixels, x[:, :H, :W] of an H x W map: the value itself
            pending[node] = state
        else:
            by_node[node] = by_node[src]
        return True
    if step in ("reshape", "permute", "roll") and shape is not None and state is not None:
        done = _window_step(step, node, src, state, shape, pending, sizes)
        if done is not None:
            return done
    if step in ("reshape", "permute", "swap") and shape is not None:
        done = _partition_step(step, node, src, state, shape, by_node, pending)
        if done is not None:
            return done
    if step == "reshape" and shape is not None:
        return _reshape_step(node, src, state, shape, by_node, pending)
    if step in ("swap", "permute"):
        return _order_step(step, node, src, state, shape, by_node, pending)
    return _part_step(step, node, src, by_node, pending, sizes)


def _reshape_step(node: Any, src: Any, state: Any, shape: tuple, by_node: dict, pending: dict) -> Any:
    """A reshape that no window, partition or patch pattern reads (see _view_step): a no-op, a map's channels
    in groups, a channel shuffle's end, a sequence as a map held channels-last, a map's positions in a row."""
    if state is None and src in by_node and shape == tuple(src.meta["tensor_meta"].shape[1:]):
        by_node[node] = by_node[src]           # to the shape it has: x.reshape(n, -1) of a flat x
        return True
    if state is None and src in by_node and len(shape) == 4:
        c = tuple(src.meta["tensor_meta"].shape[1:])
        if len(c) == 3 and shape[0] * shape[1] == c[0] and shape[2:] == c[1:]:
            pending[node] = ("grouped", by_node[src], shape[0])
            return True
    if state is not None and state[0] == "swapped" and len(shape) == 3:
        return FROM_TORCH["pattern:shuffle"].layer(Seen(None, {"groups": state[2]}, [], ())), state[1]
    if state is None and src in by_node and len(shape) == 3:
        s = tuple(src.meta["tensor_meta"].shape[1:])
        if len(s) == 2 and shape[0] * shape[1] == s[0] and shape[2] == s[1]:
            # a sequence's tokens as an H x W x D map, row by row (EdgeNeXt's x.reshape(B, H, W, C)): the map,
            # held channels-last (per-position ops read it so; x.permute(0, 3, 1, 2) gives it)
            fields = FROM_TORCH["pattern:map"].layer(Seen(None, {"height": shape[0]}, [s], shape))
            return fields, by_node[src], "last"
    if state is None and src in by_node and len(shape) == 2:
        c = tuple(src.meta["tensor_meta"].shape[1:])
        if len(c) == 3 and shape == (c[0], c[1] * c[2]):
            pending[node] = ("positions", by_node[src], c)      # the map's positions in a row: x.flatten(2)
            return True
    return None


def _order_step(step: str, node: Any, src: Any, state: Any, shape: tuple | None, by_node: dict,
                pending: dict) -> Any:
    """A transpose or permute (see _view_step): a map's positions in a row made tokens, a channel shuffle's
    swap of groups, a map held channels-last and back."""
    if state is not None and state[0] == "positions" and shape is not None:
        dims = [int(d) % 3 for d in _flat_args([*node.args[1:], *node.kwargs.values()])]
        if (sorted(dims) if step == "swap" else dims) in ([1, 2], [0, 2, 1]):       # then tokens: .transpose(1, 2)
            return FROM_TORCH["pattern:tokens"].layer(Seen(None, {}, [state[2]], shape)), state[1]
        return None
    if step == "swap" and state is not None and state[0] == "grouped":
        dims = sorted(int(d) % 5 for d in [*node.args[1:], *node.kwargs.values()][:2])
        if dims == [1, 2]:
            pending[node] = ("swapped", state[1], state[2])
            return True
        return None
    if step == "permute":
        dims = [int(d) for d in _flat_args([*node.args[1:], *node.kwargs.values()])]
        if dims == [0, 2, 3, 1] and src in by_node and len(src.meta["tensor_meta"].shape) == 4:
            pending[node] = ("last", by_node[src])
            return True
        if dims == [0, 3, 1, 2] and state is not None and state[0] == "last":
            by_node[node] = state[1]
            return True
    return None


def _part_step(step: str, node: Any, src: Any, by_node: dict, pending: dict, sizes: set) -> Any:
    """A split of a map's channels and the parts read from it (see _view_step): a channel split or slice
    layer; an index of sizes is a size."""
    if step == "split" and src in by_node:
        bounds = _split_bounds(node, src, sizes)
        if bounds is not None:
            pending[node] = ("split", by_node[src], bounds)
            return True
        return None
    if step == "pick" and node.args[0] in sizes:
        sizes.add(node)
        return True
    if step == "pick" and isinstance(node.args[0], type(node)) and pending.get(node.args[0], ("",))[0] == "split":
        _, layer, bounds = pending[node.args[0]]
        part = int(node.args[1]) % (len(bounds) - 1)        # spx[-1]: the last part
        if len(bounds) == 3 and bounds[1] * 2 == bounds[2]:        # two halves: ShuffleNetV2's channel split
            return FROM_TORCH["pattern:split"].layer(Seen(None, {"half": part}, [], ())), layer
        start, end = bounds[part], bounds[part + 1]
        return FROM_TORCH["pattern:slice"].layer(Seen(None, {"start": start, "end": end}, [], ())), layer
    return None


def _branch_step(key: str, node: Any, ins: list, meta: Any, by_node: dict, item_of: dict, pending: dict,
                 sizes: set) -> Any:
    """ResNeSt's split attention and SKNet's selective kernel compute on K branches held as one tensor of
    N x K x C x H x W: a map reshaped so (the "grouped" view) or maps stacked along dim 1 (a concatenation
    along the channels, the same values in the same order). Such a tensor is read as its K x C channel
    map: ``torch.stack(maps, 1)`` is a concatenation, ``sum(1)`` a branch sum, ``softmax(dim=1)`` a
    branch softmax, a product of two such tensors a product. Also ResNeSt's RadixSoftmax (a leaf) gives
    its map flattened, which ``view(N, -1, 1, 1)`` makes the map again. Returns the layer to make
    ``(entry, fields, sources, input shapes, output shape, K where the result is grouped again)``, True
    where the node is absorbed, None where it is no such step."""
    shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None
    if shape is None or not ins:
        return None
    dims = [_resolved(a, sizes) for a in [*node.args[1:], *node.kwargs.values()] if not _is_node_list(a)]
    if key in ("method:view", "method:reshape", "fn:reshape") and len(ins) == 1 and ins[0] in by_node \
            and len(shape) == 3 and shape[1:] == (1, 1):
        made = item_of.get(by_node[ins[0]])
        if made is not None and made.shape == shape[:1] and made.in_shape == shape and OPS[made.kind].alias is None:
            made.shape = shape                 # the layer keeps the map; its module flattened it at its end
            by_node[node] = by_node[ins[0]]
            return True
        return None
    if key == "fn:stack" and all(a in by_node for a in ins) and len(shape) == 4 and dims and dims[0] in (1, -4):
        shapes = [tuple(a.meta["tensor_meta"].shape[1:]) for a in ins]
        if len(set(shapes)) != 1 or len(shapes[0]) != 3:
            return None
        made = (len(ins) * shapes[0][0], *shapes[0][1:])
        entry = FROM_TORCH["fn:cat"]
        fields = entry.layer(Seen(None, {"dim": 1}, shapes, made))
        return entry, fields, [by_node[a] for a in ins], shapes, made, len(ins)
    if not all(pending.get(a, ("",))[0] == "grouped" for a in ins) or len({pending[a][2] for a in ins}) != 1:
        return None
    k = pending[ins[0]][2]
    views = [tuple(a.meta["tensor_meta"].shape[1:]) for a in ins]
    shapes = [(v[0] * v[1], *v[2:]) for v in views]
    sources = [pending[a][1] for a in ins]
    over_branches = bool(dims) and dims[0] in (1, -4) and not any(d is True for d in dims[1:])
    if key in ("method:sum", "fn:sum") and len(ins) == 1 and over_branches:
        entry = FROM_TORCH["pattern:branch_sum"]
        return entry, entry.layer(Seen(None, {"branches": k}, shapes, shape)), sources, shapes, shape, 0
    if key in ("method:softmax", "fn:softmax") and len(ins) == 1 and over_branches:
        entry = FROM_TORCH["pattern:branch_softmax"]
        return entry, entry.layer(Seen(None, {"branches": k}, shapes, shapes[0])), sources, shapes, shapes[0], k
    if key in ("fn:mul", "fn:imul", "method:mul") and len(ins) == 2 and views[0][:2] == views[1][:2]:
        made = (shape[0] * shape[1], *shape[2:])
        entry = FROM_TORCH["fn:mul"]
        return entry, entry.layer(Seen(None, {}, shapes, made)), sources, shapes, made, k
    return None


def _split_bounds(node: Any, src: Any, sizes: set) -> list[int] | None:
    """Where ``x.chunk(n, 1)``, ``torch.split(x, size, 1)`` or ``x.split([a, b, ...], 1)`` cuts the channels:
    ``[0, ..., C]``; None for another split (of another dim)."""
    shape = tuple(src.meta["tensor_meta"].shape) if "tensor_meta" in src.meta else ()
    args = [_resolved(a, sizes) for a in [*node.args[1:], *node.kwargs.values()]]
    if len(shape) != 4 or len(args) != 2 or args[1] not in (1, -3):
        return None
    c, how = shape[1], args[0]
    if getattr(node.target, "__name__", node.target) == "chunk":
        n = int(how)
        step = -(-c // n)
        sizes = [min(step, c - k) for k in range(0, c, step)]
    elif isinstance(how, int):
        sizes = [min(how, c - k) for k in range(0, c, how)]
    elif isinstance(how, (list, tuple)) and all(isinstance(v, int) for v in how) and sum(how) == c:
        sizes = list(how)
    else:
        return None
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    return bounds


_FLATTEN = {"method:flatten", "fn:flatten", "method:reshape", "fn:reshape", "method:view"}
_AS = {"method:reshape_as", "method:view_as"}


def _batched_step(key: str, node: Any, src: Any, state: Any, by_node: dict, item_of: dict, pending: dict) -> bool:
    """A sequence's N x S x D tokens flattened into the batch (N S x D: ``x.flatten(0, 1)``, or a reshape to
    that shape of a sequence of more than one token) and back (``reshape_as`` / ``view_as`` the sequence, or
    a reshape to N x S x D): LeViT's ``LinearNorm`` normalises each token's features so. Between the two,
    ops that keep the rows read the view as the sequence ("batched": the layer); True when the node is a step."""
    full, here = _full_shape(node), _full_shape(src) if src is not None else ()
    if key in _FLATTEN and state is None and src in by_node and len(here) == 3 and len(full) == 2 \
            and full == (here[0] * here[1], here[2]):
        starts = [d for d in node.args[1:2] if isinstance(d, int)] if key.endswith("flatten") else []
        if starts == [0] or not key.endswith("flatten") and here[1] > 1:
            pending[node] = ("batched", by_node[src])
            return True
    if key in _FLATTEN | _AS and state is not None and state[0] == "batched" and len(full) == 3 \
            and full[0] * full[1] == here[0] and state[1] in item_of and item_of[state[1]].shape == full[1:]:
        by_node[node] = state[1]
        return True
    return False
_TRANSPOSE = {"method:transpose", "fn:transpose", "method:permute", "fn:permute"}


def _token_step(key: str, node: Any, ins: list, meta: Any, by_node: dict, item_of: dict, pending: dict) -> bool:
    """ViT's token steps, True when the node is one: a patch convolution's map flattened to D x S and
    transposed to S x D (the conv becomes ``patch_embed``), an expanded parameter (the class token, read by
    the concatenation after it), attention's output taken from its (output, weights) pair, and
    ``x[:, i]`` of a sequence (``select_token``)."""

    src = ins[0] if ins else None
    shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None
    state = pending.get(src)
    if _batched_step(key, node, src, state, by_node, item_of, pending):
        return True
    if key == "method:expand" and state is not None and state[0] == "param" and len(node.users) < 2:
        pending[node] = state
        return True
    if key in ("method:reshape", "method:view") and state is not None and state[0] == "param" and meta is not None \
            and (len(meta.shape) == 4 and meta.shape[0] == 1 and tuple(meta.shape[2:]) == (1, 1)
                 or len(meta.shape) == 3 and tuple(meta.shape[1:]) == (1, 1)):
        # a vector of C as 1 x C x 1 x 1 (timm's gamma.reshape(1, -1, 1, 1)) or C x 1 x 1 (PoolFormer's Scale)
        pending[node] = state
        return True
    if key in _FLATTEN and state is None and src in by_node and shape is not None and len(shape) == 2:
        conv = item_of.get(by_node[src])
        f = conv.fields if conv is not None else {}
        if conv is not None and conv.cls == "Conv2d" and f.get("kernel") == f.get("stride") and isinstance(f.get("kernel"), int) \
                and f.get("padding") == 0 and f.get("dilation") == 1 and f.get("groups") == 1 \
                and shape == (f["out"], conv.shape[1] * conv.shape[2]):
            pending[node] = ("conv_patches", by_node[src])        # C x N: a ViT's patches, once transposed
            return True
    if key in _TRANSPOSE and state is not None and state[0] == "conv_patches":
        dims = sorted(int(d) % 3 for d in [*node.args[1:], *node.kwargs.values()])
        if dims in ([1, 2], [0, 1, 2]) and [int(d) for d in node.args[1:]] != [0, 1, 2]:
            conv = item_of[state[1]]
            patches = FROM_TORCH["pattern:patches"]
            conv.fields = patches.layer(Seen(None, conv.fields, [], ()))
            conv.kind, conv.shape = patches.kind, shape
            by_node[node] = state[1]
            return True
    if node.target is operator.getitem and src in by_node and len(node.args) == 2:
        made = item_of.get(by_node[src])
        index = node.args[1]
        if made is not None and OPS[made.kind].mixes and index == 0:        # attention's (output, weights)
            by_node[node] = by_node[src]
            return True
    return False
