"""From PyTorch: a module traced with torch.fx becomes a flat list of spec layers.

Tracing runs the module's own ``forward`` with symbolic values, so this runs the user's code: it is
done only when the user asks for it (``archc import MODULE:CALLABLE``, :func:`import_module`). Each
call maps through ``FROM_TORCH`` (the op registry: each op module's ``from_torch``); the module paths name the layers, so
the spec builds a module with the same state_dict keys. What has no op is refused with the module
path, its class and the closest call archc maps. :mod:`.loading` finds the module, :mod:`.tracer` traces
it, :mod:`.views` reads the view patterns, :mod:`.calls` holds what a mapping sees of one call.
"""

from __future__ import annotations

import contextlib
import io
import operator
from typing import Any

from ...errors import BackendError, error
from ...ops import FROM_TORCH, Unmappable
from ...ops import KINDS as OPS
from ...spec.limits import MAX_LAYERS
from ..flat import Flat, Item, place
from .calls import _PASSTHROUGH, VIEW_STEPS, Seen, _branches, _number, _prepended, _refuse, _two_params
from .loading import load_callable, module_key, state_bytes
from .tracer import (
    _attribute,
    _batch_source,
    _bound,
    _defaults,
    _fake_mode,
    _flat_args,
    _head_name,
    _is_node_list,
    _owned,
    _plain,
    _resolved,
    _static,
    _tracer,
    _value,
    _what,
    owned_path,
)
from .views import _VIEWS, _after_earlier_cat, _branch_step, _flat_map, _token_step, _view_step


def trace(model: Any, input_shape: tuple[int, ...] | None = None, name: str = "model", source: str = "") -> Flat:
    """The flat layers of ``model`` (an ``nn.Module``), traced in evaluation mode with a batch of
    one zero input of ``input_shape`` (default: the model's ``INPUT_SHAPE``, or 3 x 224 x 224)."""
    import torch
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp


    shape = tuple(input_shape or getattr(model, "INPUT_SHAPE", None) or (3, 224, 224))
    was_training = model.training
    model.train()           # training mode: auxiliary heads are traced too (they become training-only outputs)
    tracer, wrapped = _tracer(model)
    root_cls = type(model).__name__
    try:
        try:
            graph = tracer.trace(model, concrete_args=_defaults(model) or None)
        except Exception as exc:        # noqa: BLE001
            if not _branches(exc):
                raise
            # Python code on sizes (MobileViT's `if new_h != H`): traced again with the sizes as the numbers they
            # have at this input (a batch of 2, as the shapes are propagated below); a branch on values still fails
            tracer, wrapped = _tracer(model, (2, *shape))
            graph = tracer.trace(model, concrete_args=_defaults(model) or None)
    except Exception as exc:        # noqa: BLE001 (the user's code may raise anything while traced)
        path, cls = tracer.failed_in or ("", root_cls)
        branch = _branches(exc)
        what = "its forward branches on the input (torch.fx sees one path of an if or a loop over a tensor)" \
            if branch else f"tracing failed ({type(exc).__name__}: {str(exc)[:200]})"
        raise BackendError([error(f"{path or 'the model'} ({cls}): {what}", path or "model",
                                  hint="archc writes one graph for every input; make the choice a module "
                                       "attribute or a spec 'when:' condition (the closest archc op to a "
                                       "choice)")]) from None
    finally:
        model.train(was_training)

    class _Shapes(ShapeProp):
        """ShapeProp that also keeps what each call without a tensor result gave: a size, a shape,
        a comparison of sizes, None from torch._assert (see _static)."""

        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if "tensor_meta" not in n.meta:
                n.meta["archc_static"] = result
            return result

    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in wrapped and not node.users:
            graph.erase_node(node)
    if sum(1 for _ in graph.nodes) > 4 * MAX_LAYERS:
        raise BackendError([error(f"the traced graph has more than {4 * MAX_LAYERS} calls", "model")])
    gm = fx.GraphModule(model, graph)
    try:
        with torch.no_grad():
            model.eval()            # BatchNorm's running statistics stay as they are
            # shapes only, nothing computed; a batch of two: a norm traced in training mode (F.batch_norm(...,
            # training=True)) refuses one value per channel (a 1 x 1 map at batch 1); torch's ShapeProp prints a
            # traceback before it raises: kept off the user's terminal
            with contextlib.redirect_stderr(io.StringIO()):
                _Shapes(gm, fake_mode=_fake_mode()).propagate(torch.zeros(2, *shape))
    except Exception as exc:  # noqa: BLE001
        raise BackendError([error(f"the model does not run on a 1 x {' x '.join(map(str, shape))} input: "
                                  f"{type(exc).__name__}: {str(exc)[:200]}", "model",
                                  hint="give the input shape with --input CxHxW")]) from None
    finally:
        model.train(was_training)

    modules = dict(model.named_modules())
    items: list[Item] = []
    by_node: dict[Any, str] = {}          # fx node -> the name of the item that holds its value
    item_of: dict[str, Item] = {}
    calls: dict[str, int] = {}
    taken: set[str] = set()
    pending: dict[Any, tuple] = {}        # a node midway through a pattern of VIEW_STEPS -> its state
    sizes: set[Any] = set()               # nodes that compute sizes (ints), not tensors
    cats: dict[tuple, Any] = {}           # the inputs of each concatenation so far -> its node

    def unique(base: str) -> str:
        k, out = 0, base
        while out in taken:
            k += 1
            out = f"{base}_{k}"
        taken.add(out)
        return out

    def where(node: Any) -> tuple[str, str]:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            return path, getattr(cls, "__name__", str(cls))
        return "", root_cls

    for node in graph.nodes:
        if node.op == "placeholder":
            if by_node and node.args and _plain(node.args[0]):
                sizes.add(node)     # an optional argument (timm's attn_mask=None), traced at its default
                node.meta.setdefault("archc_static", node.args[0])
                continue
            if by_node:
                raise BackendError([error(f"forward takes more than one tensor ({node.name})", "model",
                                          hint="archc networks have one input")])
            by_node[node] = "input"
            continue
        if node.op == "output":
            out = node.args[0]
            if isinstance(out, fx.Node) and isinstance(out.target, type) and issubclass(out.target, tuple):
                out = out.target(*out.args, **out.kwargs)      # a named tuple of outputs built in forward
            fields = list(getattr(out, "_fields", ())) or [f"out{i}" for i in range(len(out))] \
                if isinstance(out, (tuple, list)) else []
            values = list(out) if isinstance(out, (tuple, list)) else [out]
            if not values or not all(isinstance(v, fx.Node) and v in by_node for v in values):
                raise BackendError([error("the model returns something that is not a tensor or a tuple of "
                                          "tensors", "model", hint="import a module that returns its logits")])
            result = by_node[values[0]]
            heads = {_head_name(f): by_node[v] for f, v in zip(fields[1:], values[1:])}
            continue
        if node.op == "get_attr":
            value = _attribute(model, node.target)
            if isinstance(value, torch.Tensor) and (value.dim() == 3 and (tuple(value.shape[1:]) == (1, 1)
                                                                          or value.shape[0] == 1) or value.dim() == 1):
                # a per-channel scale (read by a product below), a class token or a position embedding; a
                # vector (a per-feature scale of tokens, or a norm's weight read by its functional call)
                pending[node] = ("param", node.target)
                continue
            if isinstance(value, torch.Tensor):
                pending[node] = ("own", node.target)     # read by its module's functional call (F.conv2d(x, self.weight))
                continue
            path, cls = where(node)
            raise _refuse(path, cls, f"reads the attribute {node.target!r}, which is not a tensor", "Identity")
        if node.op == "call_function" and isinstance(node.target, type) and issubclass(node.target, tuple):
            continue                # the named tuple of outputs: read at the output below
        if _static(node):
            sizes.add(node)         # size arithmetic: its value is known once the shapes are (see _static)
            continue
        if node.target is operator.getitem and not node.users:
            continue                # a part of a result nothing reads (attention's weights, need_weights=False)
        if node.op == "call_module":
            mod = modules[node.target]
            key, path, cls = module_key(mod), node.target, type(mod).__name__
        else:
            mod = None
            fn = node.target
            key = (f"method:{fn}" if node.op == "call_method"
                   else f"fn:{getattr(fn, '__name__', str(fn))}")
            path, cls = where(node)
        ins = [a for a in _flat_args(node.args) + _flat_args(list(node.kwargs.values()))
               if isinstance(a, fx.Node) and a not in sizes]
        meta = node.meta.get("tensor_meta")
        if mod is None and _token_step(key, node, ins, meta, by_node, item_of, pending):
            continue
        step = VIEW_STEPS.get(key) if mod is None else None
        if step is not None:
            done = _view_step(step, node, ins, meta, by_node, pending, sizes)
            if done is True:
                continue
            if done is not None:                   # the pattern is complete: one layer
                fields, src = done
                layer = unique(f"{item_of[src].scope}.{fields['op']}" if src in item_of and item_of[src].scope
                               else f"%{node.name}")
                made = tuple(meta.shape[1:])
                item = Item(layer, fields, [src], fields["op"], None, None, made,
                            item_of[src].shape if src in item_of else made, cls)
                items.append(item)
                item_of[layer] = item
                by_node[node] = layer
                continue
        branch = _branch_step(key, node, ins, meta, by_node, item_of, pending, sizes) if mod is None else None
        if branch is True:
            continue
        if branch is not None:                     # a step on K branches held as one tensor: one layer
            entry, fields, sources, shapes, made, k = branch
            layer = unique(f"{path}.{fields['op']}" if path else f"%{node.name}")
            item = Item(layer, fields, sources, entry.kind, None, path or None, made, shapes[0], cls)
            items.append(item)
            item_of[layer] = item
            if k:
                pending[node] = ("grouped", layer, k)
            else:
                by_node[node] = layer
            continue
        given = {}
        if mod is not None:         # a leaf module's constant tensor argument (timm's Swin's attn_mask): a value
            given = {k: _attribute(model, pending[v][1]) for k, v in node.kwargs.items()
                     if pending.get(v, ("",))[0] in ("own", "param")}
            ins = [a for a in ins if not any(a is node.kwargs[k] for k in given)]
            # and the module that holds it, as "NAME:holder" (timm's RotaryEmbeddingCat: the grid and frequencies
            # EVA's rotary table is made of)
            given.update({f"{k}:holder": modules.get(pending[node.kwargs[k]][1].rpartition(".")[0])
                          for k in list(given)})
        owned = _owned(node, ins, pending, FROM_TORCH.get(key))
        if owned:                     # F.batch_norm(x, self.running_mean, ...): the module's own parameters
            ins = [a for a in ins if pending.get(a, ("",))[0] not in ("own", "param")]
        scale = [a for a in ins if pending.get(a, ("",))[0] == "param"]
        if key == "method:expand" and scale == ins and len(ins) == 1:
            # a token expanded over the batch and read by several calls (CaiT's class token: concatenated before
            # the patches, and the sum its class-attention block updates): a layer of its own, reading the
            # sequence whose batch size it takes
            path, key, ins = pending[scale[0]][1], "param:expand", _batch_source(node, by_node, sizes)
            if not ins:
                raise _refuse(path, cls, _what(node), key, "the batch size it is expanded to is read from no layer")
        if len(scale) > 1 and ins[:-1] == scale and ins[-1] in by_node and key == "fn:cat":
            # several tokens concatenated before the sequence at once (DeiT's class and distillation tokens):
            # each prepended in turn, the last first, makes the same sequence (one layer per parameter)
            src = by_node[ins[-1]]
            for a, (before, after) in zip(reversed(scale), _prepended(ins[-1], len(scale))):
                entry, path = FROM_TORCH["param:cat"], pending[a][1]
                seen = Seen(None, {"dim": node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0),
                                   "param_shape": tuple(_attribute(model, path).shape)}, [before], after)
                try:
                    fields = entry.layer(seen)
                except Unmappable as exc:
                    raise _refuse(path, cls, _what(node), key, str(exc)) from None
                item = Item(unique(path), fields, [src], entry.kind, path, path.rpartition(".")[0], after, before, cls)
                items.append(item)
                item_of[item.name] = item
                src = item.name
            by_node[node] = src
            continue
        extra: dict[str, Any] = {}
        if scale and len(ins) == 2:                 # a C x 1 x 1 parameter times a map: layer_scale
            path = pending[scale[0]][1]
            # "scalar:": a parameter of one number (HGNetV2's learned scale and bias)
            kind = "scalar" if _attribute(model, path).numel() == 1 else "param"
            key, ins = f"{kind}:{key.split(':')[-1]}", [a for a in ins if a not in scale]
        elif len(scale) == 2 and len(ins) == 3:
            key, path, ins, extra = _two_params(node, key, path, ins, scale, pending, model)
        last = [a for a in ins if pending.get(a, ("",))[0] in _VIEWS]
        for a in ins:
            if pending.get(a, ("",))[0] in ("own", "param"):
                raise _refuse(path, cls, f"{_what(node)} reads the parameter or buffer {pending[a][1]!r} directly",
                              key, "archc maps a module's own parameters where a norm, convolution or linear "
                                   "function reads them (F.batch_norm(x, self.running_mean, ...)), or a scale "
                                   "multiplies a layer's output")
            if a not in by_node and a not in last:
                raise _refuse(path, cls, f"{_what(node)} reads {a.name}, a value that is not a layer's output "
                                         "(a size, an index or a constant)", key)
        if key in _PASSTHROUGH and len(ins) == 1:
            by_node[node] = by_node[ins[0]]
            continue
        if key in ("method:mean", "fn:mean") and ins and len(ins[0].meta.get("tensor_meta", meta).shape) == 3:
            key = "mean:tokens"            # a mean of a sequence (of an image: a global average pool)
        if key == "fn:getitem":            # x[:, a:b] of an image, or x[:, i] of a sequence
            index = node.args[1] if len(node.args) > 1 else None
            key = "index:channels" if isinstance(index, tuple) and len(index) > 1 and isinstance(index[1], slice) \
                else "index:token"
            if key == "index:channels" and ins and len(getattr(ins[0].meta.get("tensor_meta"), "shape", ())) == 3:
                key = "index:tokens"        # x[:, a:b] of a sequence: tokens a to b (timm's x[:, prefix:])
        number = _number(node, ins)
        if number is not None and f"const:{key.split(':')[-1]}" in FROM_TORCH:
            key, extra = f"const:{key.split(':')[-1]}", number      # x * 1.7015, 0 + x: the number is in the op
        if last and pending[last[0]][0] == "patches" and f"patches:{key}" in FROM_TORCH:
            key = f"patches:{key}"         # a call that mixes positions, on MobileViT's patch groups (_patch_step)
        entry = FROM_TORCH.get(key)
        if entry is None:
            raise _refuse(path, cls, f"{_what(node)}", key)
        # (a list of sizes is its numbers: F.pad(x, (0, pad_w, 0, pad_h)) with pad_w from x.shape)
        consts = [_resolved(a, sizes) for a in node.args if not isinstance(a, fx.Node)
                  and not _is_node_list(a, sizes) or isinstance(a, fx.Node) and a in sizes]
        arg = dict(zip(entry.params, consts))
        arg.update({k: _value(v, sizes) for k, v in node.kwargs.items() if not isinstance(v, fx.Node) or v in sizes})
        arg.update(extra)
        arg.update(given)
        if key.startswith(("param:", "scalar:")):       # the parameter's own shape (a scale of C x 1 x 1, or C reshaped)
            arg["param_shape"] = tuple(_attribute(model, path).shape)
        if owned:
            arg = {**_bound(node, entry.params, sizes), "own": owned}
            path = owned_path(owned)
            if not path:
                raise _refuse(path, cls, f"{_what(node)} reads parameters of the model itself", key,
                              "archc maps a functional call with the parameters of the sub-module that makes it "
                              "(a layer is a sub-module: its keys are PATH.weight, PATH.bias)")
            mod = modules.get(path, mod)
        if key == "MultiheadAttention":            # attn(x, x, x): one input; it returns (output, weights)
            ins = list(dict.fromkeys(ins))
            meta = meta[0] if isinstance(meta, (tuple, list)) and meta else meta
        if meta is None or not hasattr(meta, "shape"):
            raise _refuse(path, cls, f"{_what(node)} returns several values", key)
        if OPS[entry.kind].join == "stack" and not last:
            ins = _after_earlier_cat(node, ins, cats)
        if key == "LayerNorm" and len(ins) == 1 and not last:
            ins, last = _flat_map(ins[0], by_node, item_of, pending)
        if last:                   # on x.permute(0, 2, 3, 1): each position's channels, an image again after
            arg["channels_last"] = True
            shapes = [item_of[pending[a][1]].shape for a in ins]
            made = tuple(meta.shape[1:])
            if pending[last[0]][0] == "part":       # a map cut into windows (MaxViT): G x P^2 x C per sample
                arg["partition"] = pending[last[0]][2:]
                made = (made[-1], *shapes[0][1:])
            elif pending[last[0]][0] == "flat":
                made = shapes[0]
            elif len(made) == 1:          # x.mean((1, 2)): the positions pooled, a C x 1 x 1 map as a flat vector
                made = (made[0], 1, 1)
            elif pending[last[0]][0] in ("windows", "rows", "wcut3"):    # timm's Swin: cut into windows, or H * W
                # rows; timm's MaxViT: cut into windows of w x w positions ("wcut3")
                arg["windows"] = pending[last[0]][2:4] if pending[last[0]][0] != "rows" else None
                made = (made[-1], *shapes[0][1:])
            elif pending[last[0]][0] == "patches":      # MobileViT's p^2 groups of H/p x W/p positions
                arg["patches"] = pending[last[0]][2]
                made = (made[-1], *shapes[0][1:])
            else:
                made = (made[-1], *made[:-1]) if len(made) == 3 else made
        else:
            shapes = [tuple(a.meta["tensor_meta"].shape[1:]) for a in ins]
            made = tuple(meta.shape[1:])
        seen = Seen(mod, arg, shapes, made)
        try:
            fields = entry.layer(seen)
        except Unmappable as exc:
            raise _refuse(path, cls, _what(node), key, str(exc)) from None
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
            # a module of the class's name that lacks what the mapping reads (a user's class named as timm's)
            why = f"a {cls} other than the one archc reads ({type(exc).__name__}: {str(exc)[:120]})"
            raise _refuse(path, cls, _what(node), key, why) from None
        if fields is None:          # the call computes its input (dropout with p 0, torch.cat([x], 1))
            if last:
                pending[node] = pending[ins[0]]
            else:
                by_node[node] = by_node[ins[0]]
            continue
        sources = [pending[a][1] if a in last else by_node[a] for a in ins]
        if key.startswith(("param:", "scalar:", "params:")) or owned:
            layer, scope, holder = unique(path), path.rpartition(".")[0], path
        elif mod is not None:
            n = calls[path] = calls.get(path, 0) + 1
            if n > 1 and any(True for _ in mod.parameters(recurse=False)):
                raise _refuse(path, cls, "is called twice (its weights are shared)", key,
                              "each archc layer has weights of its own")
            layer = unique(path) if n == 1 else unique(f"{path}_{n - 1}")
            scope = path.rpartition(".")[0]
            holder = path if any(True for _ in mod.parameters(recurse=False)) else None
        else:
            scope = path if path else None          # None: placed after the trace (see place())
            layer = unique(f"{scope}.{fields['op']}" if scope else f"%{node.name}")
            holder = None
        item = Item(layer, fields, sources, entry.kind, holder, scope, seen.shape, shapes[0] if shapes else (), cls)
        items.append(item)
        item_of[layer] = item
        if last and pending[last[0]][0] != "flat" and len(meta.shape) > 2:
            pending[node] = (pending[last[0]][0], layer, *pending[last[0]][2:])
        else:
            by_node[node] = layer
        if len(items) > MAX_LAYERS:
            raise BackendError([error(f"the model has more than {MAX_LAYERS} layers", "model")])
    result, heads = place(items, result, heads, unique)
    classes = {p: type(m).__name__ for p, m in modules.items() if p}
    return Flat(name, shape, items, source or name, classes, result, heads)


__all__ = ["trace", "load_callable", "state_bytes"]
