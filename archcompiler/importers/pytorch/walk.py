"""The walk over a traced graph (see :func:`archcompiler.importers.pytorch.trace`): each node, in order, maps
to a layer, to a step of a view pattern (:mod:`.views`), to a parameter a later call reads, or to a size.
What has no op is refused with the module path, its class and the closest call archc maps."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from ...errors import BackendError, error
from ...ops import FROM_TORCH, Unmappable, layer_or_general
from ...ops import KINDS as OPS
from ...spec.limits import MAX_LAYERS
from ..flat import Item
from .calls import _PASSTHROUGH, VIEW_STEPS, Seen, _number, _prepended, _refuse, _two_params
from .loading import module_key
from .tracer import (
    _attribute,
    _batch_source,
    _bound,
    _flat_args,
    _head_name,
    _is_node_list,
    _owned,
    _plain,
    _resolved,
    _static,
    _value,
    _what,
    owned_path,
)
from .views import _VIEWS, _after_earlier_cat, _branch_step, _flat_map, _token_step, _view_step


@dataclass
class _Call:
    """What the walk knows of one call while it maps it: the registry key it maps through, where it is
    made (module path and class), the module it calls (None for a function or method), its tensor inputs
    and its traced result, then what the mapping reads, gathered on the way (see :meth:`_Walk._call`)."""

    node: Any
    key: str
    path: str
    cls: str
    mod: Any
    ins: list
    meta: Any
    given: dict = field(default_factory=dict)     # a leaf module's constant tensor arguments, and their holders
    owned: Any = None                             # the module's own parameters a functional call reads
    scale: list = field(default_factory=list)     # the inputs that are parameters (a scale, a token)
    extra: dict = field(default_factory=dict)     # arguments the mapping reads besides the call's own
    last: list = field(default_factory=list)      # the inputs held as a view of a layer (see views._VIEWS)
    entry: Any = None                             # the registry entry it maps through
    arg: dict = field(default_factory=dict)       # the arguments the mapping sees
    batched: bool = False                         # on a sequence's tokens flattened into the batch


class _Walk:
    """The walk over the traced graph, in order, one method per kind of node: which item holds each node's
    value, the view patterns midway, the nodes that compute sizes, and the items made so far."""

    def __init__(self, model: Any, root_cls: str) -> None:
        self.model = model
        self.root_cls = root_cls
        self.modules = dict(model.named_modules())
        self.items: list[Item] = []
        self.by_node: dict[Any, str] = {}          # fx node -> the name of the item that holds its value
        self.item_of: dict[str, Item] = {}
        self.calls: dict[str, int] = {}            # module path -> how many times it was called
        self.taken: set[str] = set()
        self.pending: dict[Any, tuple] = {}        # a node midway through a pattern of VIEW_STEPS -> its state
        self.sizes: set[Any] = set()               # nodes that compute sizes (ints), not tensors
        self.cats: dict[tuple, Any] = {}           # the inputs of each concatenation so far -> its node
        self.firsts: set[Any] = set()              # calls whose layer is the first element of the tuple they return
        self.result: Any = None                    # the output's item, and the other outputs' (heads)
        self.heads: dict[str, str] = {}

    def unique(self, base: str) -> str:
        """``base``, or ``base_K`` where ``base`` is taken already."""
        k, out = 0, base
        while out in self.taken:
            k += 1
            out = f"{base}_{k}"
        self.taken.add(out)
        return out

    def where(self, node: Any) -> tuple[str, str]:
        """The module path and class that make a function or method call (the model itself: "")."""
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            return path, getattr(cls, "__name__", str(cls))
        return "", self.root_cls

    def _state(self, node: Any) -> str:
        """The kind of view or parameter ``node`` is held as in ``pending`` ("" for none)."""
        return self.pending.get(node, ("",))[0]

    def _keep(self, item: Item) -> None:
        """Keep a layer made, findable by its name."""
        self.items.append(item)
        self.item_of[item.name] = item

    def step(self, node: Any) -> None:
        """Map one node: its value becomes an item's, a pending view or parameter, or a size."""
        import torch.fx as fx

        handler = {"placeholder": self._placeholder, "output": self._output, "get_attr": self._get_attr}.get(node.op)
        if handler is not None:
            handler(node)
            return
        if node.op == "call_function" and isinstance(node.target, type) and issubclass(node.target, tuple):
            return                  # the named tuple of outputs: read at the output
        if node.op == "call_function" and node.args and isinstance(node.args[0], fx.Node) \
                and node.args[0] in self.firsts:
            self._first_value(node)
            return
        if _static(node):
            self.sizes.add(node)    # size arithmetic: its value is known once the shapes are (see _static)
            return
        if node.target is operator.getitem and not node.users:
            return                  # a part of a result nothing reads (attention's weights, need_weights=False)
        self._call(node)

    def _placeholder(self, node: Any) -> None:
        """The input; a later argument at its default is a size (timm's attn_mask=None)."""
        if self.by_node and node.args and _plain(node.args[0]):
            self.sizes.add(node)
            node.meta.setdefault("archc_static", node.args[0])
            return
        if self.by_node:
            raise BackendError([error(f"forward takes more than one tensor ({node.name})", "model",
                                      hint="archc networks have one input")])
        self.by_node[node] = "input"

    def _output(self, node: Any) -> None:
        """The result and the other outputs (a tuple, or a named tuple: the heads, named by its fields)."""
        import torch.fx as fx

        out = node.args[0]
        if isinstance(out, fx.Node) and isinstance(out.target, type) and issubclass(out.target, tuple):
            out = out.target(*out.args, **out.kwargs)      # a named tuple of outputs built in forward
        fields = list(getattr(out, "_fields", ())) or [f"out{i}" for i in range(len(out))] \
            if isinstance(out, (tuple, list)) else []
        values = list(out) if isinstance(out, (tuple, list)) else [out]
        if not values or not all(isinstance(v, fx.Node) and v in self.by_node for v in values):
            raise BackendError([error("the model returns something that is not a tensor or a tuple of "
                                      "tensors", "model", hint="import a module that returns its logits")])
        self.result = self.by_node[values[0]]
        self.heads = {_head_name(f): self.by_node[v] for f, v in zip(fields[1:], values[1:])}

    def _get_attr(self, node: Any) -> None:
        """A parameter or buffer read in forward: held until a call reads it (a scale, a token, a norm's
        own weight); what is not a tensor is refused."""
        import torch

        value = _attribute(self.model, node.target)
        if isinstance(value, torch.Tensor) and (value.dim() == 3 and (tuple(value.shape[1:]) == (1, 1)
                                                                      or value.shape[0] == 1) or value.dim() == 1):
            # a per-channel scale (read by a product below), a class token or a position embedding; a
            # vector (a per-feature scale of tokens, or a norm's weight read by its functional call)
            self.pending[node] = ("param", node.target)
            return
        if isinstance(value, torch.Tensor):
            self.pending[node] = ("own", node.target)     # read by its module's functional call (F.conv2d(x, self.weight))
            return
        path, cls = self.where(node)
        raise _refuse(path, cls, f"reads the attribute {node.target!r}, which is not a tensor", "Identity")

    def _first_value(self, node: Any) -> None:
        """x.max(dim)[0], .values: the layer (FromTorch.first); its indices have no op."""
        if node.args[1:] in ((0,), ("values",)):
            self.by_node[node] = self.by_node[node.args[0]]
            return
        if node.users:
            path, cls = self.where(node)
            raise _refuse(path, cls, _what(node), "fn:getitem", "the indices of a maximum or minimum (archc's "
                                                                "reduce gives the values)")

    def _call(self, node: Any) -> None:
        """A module, function or method call: a step of a view pattern, a parameter read, the value it
        reads (a pass-through), or a layer mapped through its registry entry."""
        c = self._describe(node)
        if c.mod is None and self._pattern(c):
            return
        self._given(c)
        if self._scales(c):
            return
        self._check_inputs(c)
        if c.key in _PASSTHROUGH and len(c.ins) == 1:
            self.by_node[node] = self.by_node[c.ins[0]]
            return
        self._entry(c)
        self._read_arguments(c)
        self._result_meta(c)
        shapes, made = self._shapes(c)
        seen = Seen(c.mod, c.arg, shapes, made)
        fields = self._fields(c, seen)
        if fields is None:          # the call computes its input (dropout with p 0, torch.cat([x], 1))
            if c.last:
                self.pending[node] = self.pending[c.ins[0]]
            else:
                self.by_node[node] = self.by_node[c.ins[0]]
            return
        self._add(c, fields, seen, shapes)

    def _describe(self, node: Any) -> _Call:
        """The call's registry key (a module's class, ``fn:NAME``, ``method:NAME``), where it is made,
        and its tensor inputs (not sizes)."""
        import torch.fx as fx

        if node.op == "call_module":
            mod = self.modules[node.target]
            key, path, cls = module_key(mod), node.target, type(mod).__name__
        else:
            mod, fn = None, node.target
            key = f"method:{fn}" if node.op == "call_method" else f"fn:{getattr(fn, '__name__', str(fn))}"
            path, cls = self.where(node)
        ins = [a for a in _flat_args(node.args) + _flat_args(list(node.kwargs.values()))
               if isinstance(a, fx.Node) and a not in self.sizes]
        return _Call(node, key, path, cls, mod, ins, node.meta.get("tensor_meta"))

    def _pattern(self, c: _Call) -> bool:
        """A function or method call that is a step of a pattern of views (tokens, VIEW_STEPS, branches
        held as one tensor): True when it is one (absorbed, or the layer the pattern makes)."""
        node, ins, meta = c.node, c.ins, c.meta
        if _token_step(c.key, node, ins, meta, self.by_node, self.item_of, self.pending):
            return True
        step = VIEW_STEPS.get(c.key)
        if step is not None:
            done = _view_step(step, node, ins, meta, self.by_node, self.pending, self.sizes)
            if done is True:
                return True
            if done is not None:                   # the pattern is complete: one layer
                self._view_layer(c, done)
                return True
        branch = _branch_step(c.key, node, ins, meta, self.by_node, self.item_of, self.pending, self.sizes)
        if branch is True:
            return True
        if branch is not None:                     # a step on K branches held as one tensor: one layer
            self._branch_layer(c, branch)
            return True
        return False

    def _view_layer(self, c: _Call, done: tuple) -> None:
        """The layer a complete view pattern makes (see views._view_step)."""
        fields, src = done[:2]
        item_of = self.item_of
        # named in the module that makes the call (EdgeNeXt's block splits the map it is given), else placed
        layer = self.unique(f"{c.path}.{fields['op']}" if c.path else f"{item_of[src].scope}.{fields['op']}"
                            if src in item_of and item_of[src].scope else f"%{c.node.name}")
        made = tuple(c.meta.shape[1:])
        if len(done) > 2:                  # a map held channels-last (H x W x C): the layer makes C x H x W
            made = (made[-1], *made[:-1])
        self._keep(Item(layer, fields, [src], fields["op"], None, c.path or None, made,
                        item_of[src].shape if src in item_of else made, c.cls))
        if len(done) > 2:
            self.pending[c.node] = (done[2], layer)
        else:
            self.by_node[c.node] = layer

    def _branch_layer(self, c: _Call, branch: tuple) -> None:
        """The layer a step on K branches held as one tensor makes (see views._branch_step)."""
        entry, fields, sources, shapes, made, k = branch
        layer = self.unique(f"{c.path}.{fields['op']}" if c.path else f"%{c.node.name}")
        self._keep(Item(layer, fields, sources, entry.kind, None, c.path or None, made, shapes[0], c.cls))
        if k:
            self.pending[c.node] = ("grouped", layer, k)
        else:
            self.by_node[c.node] = layer

    def _given(self, c: _Call) -> None:
        """What a call reads besides its tensor inputs: a leaf module's constant tensor arguments, the
        layer whose sizes a module is called on, and the module's own parameters a functional call reads."""
        node, pending = c.node, self.pending
        if c.mod is not None:       # a leaf module's constant tensor argument (timm's Swin's attn_mask): a value
            given = {k: _attribute(self.model, pending[v][1]) for k, v in node.kwargs.items()
                     if pending.get(v, ("",))[0] in ("own", "param")}
            c.ins = [a for a in c.ins if not any(a is node.kwargs[k] for k in given)]
            # and the module that holds it, as "NAME:holder" (timm's RotaryEmbeddingCat: the grid and frequencies
            # EVA's rotary table is made of)
            given.update({f"{k}:holder": self.modules.get(pending[node.kwargs[k]][1].rpartition(".")[0])
                          for k in list(given)})
            c.given = given
        if c.mod is not None and not c.ins and node.args:
            # a module called on sizes alone (EdgeNeXt's pos_embd((B, H, W))): it reads the layer whose sizes they
            # are, for its shape
            c.ins = _batch_source(node, self.by_node, self.sizes, first=0)
        c.owned = _owned(node, c.ins, pending, FROM_TORCH.get(c.key))
        if c.owned:                   # F.batch_norm(x, self.running_mean, ...): the module's own parameters
            c.ins = [a for a in c.ins if self._state(a) not in ("own", "param")]

    def _scales(self, c: _Call) -> bool:
        """Calls that read parameters: a token expanded over the batch, tokens prepended to a sequence
        (True: done), a per-channel scale or two parameters (a scale and a shift)."""
        c.scale = [a for a in c.ins if self._state(a) == "param"]
        if c.key == "method:expand" and c.scale == c.ins and len(c.ins) == 1:
            # a token expanded over the batch and read by several calls (CaiT's class token: concatenated before
            # the patches, and the sum its class-attention block updates): a layer of its own, reading the
            # sequence whose batch size it takes
            c.path, c.key = self.pending[c.scale[0]][1], "param:expand"
            c.ins = _batch_source(c.node, self.by_node, self.sizes)
            if not c.ins:
                raise _refuse(c.path, c.cls, _what(c.node), c.key,
                              "the batch size it is expanded to is read from no layer")
        if len(c.scale) > 1 and c.ins[:-1] == c.scale and c.ins[-1] in self.by_node and c.key == "fn:cat":
            self._prepend_tokens(c)
            return True
        if c.scale and len(c.ins) == 2:                 # a C x 1 x 1 parameter times a map: layer_scale
            c.path = self.pending[c.scale[0]][1]
            # "scalar:": a parameter of one number (HGNetV2's learned scale and bias)
            kind = "scalar" if _attribute(self.model, c.path).numel() == 1 else "param"
            c.key, c.ins = f"{kind}:{c.key.split(':')[-1]}", [a for a in c.ins if a not in c.scale]
        elif len(c.scale) == 2 and len(c.ins) == 3:
            c.key, c.path, c.ins, c.extra = _two_params(c.node, c.key, c.path, c.ins, c.scale, self.pending,
                                                        self.model)
        return False

    def _prepend_tokens(self, c: _Call) -> None:
        """Several tokens concatenated before the sequence at once (DeiT's class and distillation tokens):
        each prepended in turn, the last first, makes the same sequence (one layer per parameter)."""
        node = c.node
        src = self.by_node[c.ins[-1]]
        for a, (before, after) in zip(reversed(c.scale), _prepended(c.ins[-1], len(c.scale))):
            entry, path = FROM_TORCH["param:cat"], self.pending[a][1]
            seen = Seen(None, {"dim": node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0),
                               "param_shape": tuple(_attribute(self.model, path).shape)}, [before], after)
            try:
                fields = entry.layer(seen)
            except Unmappable as exc:
                raise _refuse(path, c.cls, _what(node), c.key, str(exc)) from None
            item = Item(self.unique(path), fields, [src], entry.kind, path, path.rpartition(".")[0], after, before,
                        c.cls)
            self._keep(item)
            src = item.name
        self.by_node[node] = src

    def _check_inputs(self, c: _Call) -> None:
        """Each input is a layer's output or a view of one (``c.last``); a parameter read directly, or a
        size, index or constant read as a tensor, is refused."""
        c.last = [a for a in c.ins if self._state(a) in _VIEWS]
        for a in c.ins:
            if self._state(a) in ("own", "param"):
                raise _refuse(c.path, c.cls, f"{_what(c.node)} reads the parameter or buffer "
                                             f"{self.pending[a][1]!r} directly",
                              c.key, "archc maps a module's own parameters where a norm, convolution or linear "
                                     "function reads them (F.batch_norm(x, self.running_mean, ...)), or a scale "
                                     "multiplies a layer's output")
            if a not in self.by_node and a not in c.last:
                raise _refuse(c.path, c.cls, f"{_what(c.node)} reads {a.name}, a value that is not a layer's "
                                             "output (a size, an index or a constant)", c.key)

    def _entry(self, c: _Call) -> None:
        """The registry entry the call maps through, its key refined by what it reads (a mean of tokens, an
        index of channels or tokens, a number, MobileViT's patch groups); a call with none is refused."""
        node, ins, key = c.node, c.ins, c.key
        if key in ("method:mean", "fn:mean") and ins and len(ins[0].meta.get("tensor_meta", c.meta).shape) == 3:
            key = "mean:tokens"            # a mean of a sequence (of an image: a global average pool)
        if key == "fn:getitem":            # x[:, a:b] of an image, or x[:, i] of a sequence
            index = node.args[1] if len(node.args) > 1 else None
            key = "index:channels" if isinstance(index, tuple) and len(index) > 1 and isinstance(index[1], slice) \
                else "index:token"
            if key == "index:channels" and ins and len(getattr(ins[0].meta.get("tensor_meta"), "shape", ())) == 3:
                key = "index:tokens"        # x[:, a:b] of a sequence: tokens a to b (timm's x[:, prefix:])
        number = _number(node, ins)
        if number is not None and f"const:{key.split(':')[-1]}" in FROM_TORCH:
            key, c.extra = f"const:{key.split(':')[-1]}", number      # x * 1.7015, 0 + x: the number is in the op
        if c.last and self.pending[c.last[0]][0] == "patches" and f"patches:{key}" in FROM_TORCH:
            key = f"patches:{key}"         # a call that mixes positions, on MobileViT's patch groups (_patch_step)
        c.key, c.entry = key, FROM_TORCH.get(key)
        if c.entry is None:
            raise _refuse(c.path, c.cls, f"{_what(node)}", key)

    def _read_arguments(self, c: _Call) -> None:
        """The arguments the mapping sees: the call's constants by the entry's parameter names, its keyword
        constants, what the walk found (``extra``, ``given``), a parameter's shape, or a functional call's
        own parameters (then the module that holds them is the call's)."""
        import torch.fx as fx

        node, sizes = c.node, self.sizes
        # (a list of sizes is its numbers: F.pad(x, (0, pad_w, 0, pad_h)) with pad_w from x.shape)
        consts = [_resolved(a, sizes) for a in node.args if not isinstance(a, fx.Node)
                  and not _is_node_list(a, sizes) or isinstance(a, fx.Node) and a in sizes]
        arg = dict(zip(c.entry.params, consts))
        arg.update({k: _value(v, sizes) for k, v in node.kwargs.items() if not isinstance(v, fx.Node) or v in sizes})
        arg.update(c.extra)
        arg.update(c.given)
        if c.key.startswith(("param:", "scalar:")):       # the parameter's own shape (a scale of C x 1 x 1, or C reshaped)
            arg["param_shape"] = tuple(_attribute(self.model, c.path).shape)
        if c.owned:
            arg = {**_bound(node, c.entry.params, sizes), "own": c.owned}
            c.path = owned_path(c.owned)
            if not c.path:
                raise _refuse(c.path, c.cls, f"{_what(node)} reads parameters of the model itself", c.key,
                              "archc maps a functional call with the parameters of the sub-module that makes it "
                              "(a layer is a sub-module: its keys are PATH.weight, PATH.bias)")
            c.mod = self.modules.get(c.path, c.mod)
        c.arg = arg

    def _result_meta(self, c: _Call) -> None:
        """The traced result the layer makes (the first of several where the op reads so), and the inputs
        as the op reads them (after an earlier concatenation, a flat map as its map)."""
        if c.key == "MultiheadAttention":            # attn(x, x, x): one input; it returns (output, weights)
            c.ins = list(dict.fromkeys(c.ins))
            c.meta = c.meta[0] if isinstance(c.meta, (tuple, list)) and c.meta else c.meta
        if c.entry.first and isinstance(c.meta, (tuple, list)) and c.meta:
            c.meta = c.meta[0]                          # x.max(dim): the values (read as [0] or .values)
            self.firsts.add(c.node)
        if c.meta is None or not hasattr(c.meta, "shape"):
            raise _refuse(c.path, c.cls, f"{_what(c.node)} returns several values", c.key)
        if OPS[c.entry.kind].join == "stack" and not c.last:
            c.ins = _after_earlier_cat(c.node, c.ins, self.cats)
        if c.key == "LayerNorm" and len(c.ins) == 1 and not c.last:
            c.ins, c.last = _flat_map(c.ins[0], self.by_node, self.item_of, self.pending)
        c.batched = bool(c.last) and self.pending[c.last[0]][0] == "batched"
        if c.batched and (not hasattr(c.meta, "shape")
                          or c.meta.shape[:1] != c.last[0].meta["tensor_meta"].shape[:1]):
            raise _refuse(c.path, c.cls, _what(c.node), c.key, "a call that mixes the tokens flattened into the "
                                                               "batch (archc reads per-token calls there, a "
                                                               "BatchNorm1d)")

    def _shapes(self, c: _Call) -> tuple[list, tuple]:
        """The input shapes the mapping sees and the shape the layer makes: on a view of a layer (see
        views._VIEWS), the layer's shapes, the view an argument (``channels_last``, ``windows``, ...)."""
        if not c.last:
            return [tuple(a.meta["tensor_meta"].shape[1:]) for a in c.ins], tuple(c.meta.shape[1:])
        arg, view = c.arg, self.pending[c.last[0]]
        # on x.permute(0, 2, 3, 1): each position's channels, an image again after
        arg["batched" if c.batched else "channels_last"] = True
        shapes = [self.item_of[self.pending[a][1]].shape for a in c.ins]
        made = tuple(c.meta.shape[1:])
        if c.batched:            # the tokens flattened into the batch (LinearNorm): the sequence, per token
            made = (*shapes[0][:-1], *made)
        elif view[0] == "part":       # a map cut into windows (MaxViT): G x P^2 x C per sample
            arg["partition"] = view[2:]
            made = (made[-1], *shapes[0][1:])
        elif view[0] == "flat":
            made = shapes[0]
        elif len(made) == 1:          # x.mean((1, 2)): the positions pooled, a C x 1 x 1 map as a flat vector
            made = (made[0], 1, 1)
        elif view[0] in ("windows", "rows", "wcut3"):    # timm's Swin: cut into windows, or H * W
            # rows; timm's MaxViT: cut into windows of w x w positions ("wcut3")
            arg["windows"] = view[2:4] if view[0] != "rows" else None
            made = (made[-1], *shapes[0][1:])
        elif view[0] == "patches":      # MobileViT's p^2 groups of H/p x W/p positions
            arg["patches"] = view[2]
            made = (made[-1], *shapes[0][1:])
        else:
            made = (made[-1], *made[:-1]) if len(made) == 3 else made
        return shapes, made

    def _fields(self, c: _Call, seen: Seen) -> dict | None:
        """The layer's fields from its registry entry (None: the call computes its input); what the
        mapping cannot read is refused, located."""
        try:
            c.entry, fields = layer_or_general(FROM_TORCH, c.entry, c.key, seen)
        except Unmappable as exc:
            raise _refuse(c.path, c.cls, _what(c.node), c.key, str(exc)) from None
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
            # a module of the class's name that lacks what the mapping reads (a user's class named as timm's)
            why = f"a {c.cls} other than the one archc reads ({type(exc).__name__}: {str(exc)[:120]})"
            raise _refuse(c.path, c.cls, _what(c.node), c.key, why) from None
        return fields

    def _name(self, c: _Call, fields: dict) -> tuple[str, Any, Any]:
        """The layer's name, its container and the module path whose parameters it holds: a parameter's
        or a module's path (a module called again: PATH_1, refused if it has weights), else the op's name
        in the module that makes the call."""
        if c.key.startswith(("param:", "scalar:", "params:")) or c.owned:
            return self.unique(c.path), c.path.rpartition(".")[0], c.path
        if c.mod is not None:
            n = self.calls[c.path] = self.calls.get(c.path, 0) + 1
            if n > 1 and any(True for _ in c.mod.parameters(recurse=False)):
                raise _refuse(c.path, c.cls, "is called twice (its weights are shared)", c.key,
                              "each archc layer has weights of its own")
            layer = self.unique(c.path) if n == 1 else self.unique(f"{c.path}_{n - 1}")
            holder = c.path if any(True for _ in c.mod.parameters(recurse=False)) else None
            return layer, c.path.rpartition(".")[0], holder
        scope = c.path if c.path else None          # None: placed after the trace (see place())
        return self.unique(f"{scope}.{fields['op']}" if scope else f"%{c.node.name}"), scope, None

    def _add(self, c: _Call, fields: dict, seen: Seen, shapes: list) -> None:
        """The call's layer: kept, and the node's value (or, on a view, the view of it)."""
        sources = [self.pending[a][1] if a in c.last else self.by_node[a] for a in c.ins]
        layer, scope, holder = self._name(c, fields)
        self._keep(Item(layer, fields, sources, c.entry.kind, holder, scope, seen.shape,
                        shapes[0] if shapes else (), c.cls))
        view = self.pending[c.last[0]] if c.last else None
        if view is not None and view[0] != "flat" and (len(c.meta.shape) > 2 or c.batched):
            self.pending[c.node] = (view[0], layer, *view[2:])
        else:
            self.by_node[c.node] = layer
        if len(self.items) > MAX_LAYERS:
            raise BackendError([error(f"the model has more than {MAX_LAYERS} layers", "model")])
