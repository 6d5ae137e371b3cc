"""From PyTorch: a module traced with torch.fx becomes a flat list of spec layers.

Tracing runs the module's own ``forward`` with symbolic values, so this runs the user's code: it is
done only when the user asks for it (``archc import MODULE:CALLABLE``, :func:`import_module`). Each
call maps through ``FROM_TORCH`` (the op registry: each op module's ``from_torch``); the module paths name the layers, so
the spec builds a module with the same state_dict keys. What has no op is refused with the module
path, its class and the closest call archc maps.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import io
import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, error
from ..ops import FROM_TORCH, Unmappable
from ..ops import KINDS as OPS
from ..spec.limits import MAX_LAYERS
from .flat import Flat, Item, place


@dataclass(frozen=True)
class Seen:
    """One call as torch.fx traced it: the module (for a module call), the call's other arguments
    bound to their names (``arg``), and the per-sample shapes of its tensor inputs and output."""

    module: Any
    arg: dict[str, Any]
    shapes: list[tuple[int, ...]]
    shape: tuple[int, ...]


# Calls that are one step of a pattern the table maps as a whole (ShuffleNet's channel shuffle, written
# x.view(N, g, C // g, H, W).transpose(1, 2).contiguous().view(N, C, H, W) by torchvision and
# x.unflatten(1, (g, -1)).transpose(1, 2).flatten(1, 2) by archc; its split, x.chunk(2, 1)[i]; MaxViT's
# partition of the map into windows, x.reshape(N, C, H / P, P, W / P, P).permute(0, 2, 4, 3, 5, 1).reshape(N,
# G, P * P, C), its grid (then swapaxes(-2, -3)) and the way back), and the arithmetic on sizes such patterns
# read: the step each call is, by the shapes it makes.
VIEW_STEPS: dict[str, str] = {
    "method:view": "reshape", "method:reshape": "reshape", "fn:reshape": "reshape", "method:unflatten": "reshape",
    "method:flatten": "reshape", "fn:flatten": "reshape",
    "method:transpose": "swap", "fn:transpose": "swap", "method:swapaxes": "swap", "fn:swapaxes": "swap",
    "method:contiguous": "same",
    "method:chunk": "split", "fn:chunk": "split", "method:split": "split", "fn:split": "split", "fn:getitem": "pick",
    "method:permute": "permute", "fn:permute": "permute",
    "method:size": "size", "fn:getattr": "size", "fn:floordiv": "size", "fn:mul": "size", "fn:sub": "size",
}

# calls that change nothing a spec sees (a view's memory layout): the value passes through
_PASSTHROUGH = {"method:contiguous"}


def _closest(key: str) -> str:
    names = sorted({k.split(":")[-1] for k in FROM_TORCH if not k.startswith(("param:", "pattern:"))})
    best = difflib.get_close_matches(key.split(":")[-1], names, n=1, cutoff=0.0)
    return best[0] if best else names[0]


def _refuse(path: str, cls: str, what: str, key: str, why: str = "") -> BackendError:
    where = path or "the model"
    because = f": {why}" if why else " has no archc op"
    return BackendError([error(f"{where} ({cls}): {what}{because}", path or "model",
                               hint=f"the closest call archc maps is {_closest(key)!r}; see the README's "
                                    "'Import' section for what maps")])


CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


def torchvision_install(torch_version: str | None = None) -> str:
    """The command that installs torchvision beside this torch: torchvision is no dependency of archc,
    and only the release made for the installed torch imports (torch 2.N pairs with torchvision 0.(N+15)),
    from the same index (PyPI's pulls torch's CUDA build over a CPU one)."""
    import torch

    version = (torch_version or torch.__version__).split("+")[0]
    major, minor = (int(v) for v in version.split(".")[:2])
    cpu = "+cpu" in (torch_version or torch.__version__) or not torch.cuda.is_available()
    command = f"pip install torch=={version} torchvision==0.{minor + 15}.*" if major == 2 else "pip install torchvision"
    where = f" --index-url {CPU_WHEELS}" if cpu else ""
    return (f"archc does not depend on torchvision; install the release made for your torch {version}: "
            f"{command}{where}")


def load_callable(target: str, args: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``my_model.py:Net`` or ``torchvision.models:resnet50`` -> the module the callable returns
    (called with ``args``) and a name for the spec. This imports and runs the user's code."""
    import torch

    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise BackendError([error(f"{target!r} is not MODULE:CALLABLE", "import",
                                  hint="for example my_model.py:Net or torchvision.models:resnet50")])
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise BackendError([error(f"{file} does not exist", "import")])
            name = f"archc_import_{re.sub(r'[^A-Za-z0-9_]', '_', file.stem)}"
            spec = importlib.util.spec_from_file_location(name, file)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        hint = torchvision_install() if missing.split(".")[0] == "torchvision" else None
        raise BackendError([error(f"cannot import {module_name!r}: {exc}", "import", hint=hint)]) from None
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's code failed: said with its place, no traceback)
        raise _user_code_failed(f"importing {module_name!r}", exc) from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise BackendError([error(f"{module_name!r} has no {attr!r}", "import")])
    try:
        model = fn(**(args or {})) if not isinstance(fn, torch.nn.Module) else fn
    except Exception as exc:  # noqa: BLE001
        raise _user_code_failed(f"calling {target}", exc) from None
    if not isinstance(model, torch.nn.Module):
        raise BackendError([error(f"{target} returned a {type(model).__name__}, not a torch.nn.Module", "import")])
    return model, attr


def _user_code_failed(doing: str, exc: BaseException) -> BackendError:
    """The user's module failed while archc imported or called it: what failed, and where in their code (the
    innermost frame outside archc), in one line."""
    import traceback

    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}:{exc.offset or 0}"
        text = exc.msg
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "archcompiler" not in Path(f.filename).parts]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        text = str(exc)
    message = " ".join(f"{type(exc).__name__}: {text}".split())[:300]
    return BackendError([error(f"{doing} failed{' at ' + where if where else ''}: {message}", "import",
                               hint="archc import runs the module's own code: fix it, then import again")])


def _tracer(model: Any) -> Any:
    import torch.fx as fx

    from ..backends.torch.runtime import IN_GENERATED

    # archc's own generated modules check their input in plain Python, and draw stochastic depth's noise:
    # those calls are kept as one opaque node each (the check is dropped, stochastic depth maps)
    space = getattr(model.forward, "__globals__", {})
    wrapped = tuple(f for f in (space.get("check_input"), space.get("stochastic_depth")) if callable(f))
    # leaves: modules of torch.nn and torchvision whose class FROM_TORCH names (leaf-module recognition by class
    # name and module path: torchvision is never imported here), and the helper classes of archc's own generated
    # modules (runtime.py's WindowAttention, PatchMerging) as the module's namespace holds them
    own = {v for k, v in space.items() if k in IN_GENERATED and isinstance(v, type)} if wrapped else set()

    class Tracer(fx.Tracer):
        def __init__(self) -> None:
            super().__init__(autowrap_functions=wrapped)
            self.stack: list[tuple[str, str]] = []
            self.failed_in: tuple[str, str] | None = None

        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            entry = FROM_TORCH.get(type(m).__name__)
            return entry is not None and (type(m).__module__.startswith(entry.modules) or type(m) in own)

        def call_module(self, m: Any, forward: Any, args: Any, kwargs: Any) -> Any:
            self.stack.append((self.path_of_module(m), type(m).__name__))
            try:
                return super().call_module(m, forward, args, kwargs)
            except Exception:
                if self.failed_in is None:
                    self.failed_in = self.stack[-1]
                raise
            finally:
                self.stack.pop()

    return Tracer(), wrapped


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
        graph = tracer.trace(model, concrete_args=_defaults(model) or None)
    except Exception as exc:        # noqa: BLE001 (the user's code may raise anything while traced)
        path, cls = tracer.failed_in or ("", root_cls)
        branch = "control flow" in str(exc) or "iterate" in str(exc)
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
            key, path, cls = type(mod).__name__, node.target, type(mod).__name__
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
        owned = _owned(node, ins, pending, FROM_TORCH.get(key))
        if owned:                     # F.batch_norm(x, self.running_mean, ...): the module's own parameters
            ins = [a for a in ins if pending.get(a, ("",))[0] not in ("own", "param")]
        scale = [a for a in ins if pending.get(a, ("",))[0] == "param"]
        if scale and len(ins) == 2:                 # a C x 1 x 1 parameter times a map: layer_scale
            key, path, ins = f"param:{key.split(':')[-1]}", pending[scale[0]][1], [a for a in ins if a not in scale]
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
        entry = FROM_TORCH.get(key)
        if entry is None:
            raise _refuse(path, cls, f"{_what(node)}", key)
        consts = [_resolved(a, sizes) for a in node.args
                  if not isinstance(a, fx.Node) and not _is_node_list(a) or isinstance(a, fx.Node) and a in sizes]
        arg = dict(zip(entry.params, consts))
        arg.update({k: _value(v, sizes) for k, v in node.kwargs.items() if not isinstance(v, fx.Node) or v in sizes})
        if key.startswith("param:"):       # the parameter's own shape (a scale of C x 1 x 1, or C reshaped)
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
        if fields is None:          # the call computes its input (dropout with p 0, torch.cat([x], 1))
            if last:
                pending[node] = pending[ins[0]]
            else:
                by_node[node] = by_node[ins[0]]
            continue
        sources = [pending[a][1] if a in last else by_node[a] for a in ins]
        if key.startswith("param:") or owned:
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
        if last and pending[last[0]][0] != "flat":
            pending[node] = (pending[last[0]][0], layer, *pending[last[0]][2:])
        else:
            by_node[node] = layer
        if len(items) > MAX_LAYERS:
            raise BackendError([error(f"the model has more than {MAX_LAYERS} layers", "model")])
    result, heads = place(items, result, heads, unique)
    classes = {p: type(m).__name__ for p, m in modules.items() if p}
    return Flat(name, shape, items, source or name, classes, result, heads)


def _partition_step(step: str, node: Any, src: Any, state: Any, shape: tuple, by_node: dict, pending: dict) -> Any:
    """MaxViT's WindowPartition (N x C x H x W to N x G x P^2 x C: G windows of P x P positions), the swap
    of its last two axes that makes it a grid (G' = P^2 groups of positions H / P apart), and the way back
    (WindowDepartition): True when the node is a step (its state in ``pending``), the layer's value again
    at the end, None when it is no such step. Per-position ops read the cut map as the map itself."""
    dims = [d for d in _flat_args([*node.args[1:], *node.kwargs.values()]) if isinstance(d, int)]
    kind = state[0] if state is not None else None
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


# the views of a layer's output that per-position ops read as the layer itself: channels-last (x.permute(0, 2,
# 3, 1), state ("last", layer)), cut into windows or a grid (MaxViT's partition, ("part", layer, grid, P)), and
# a C x 1 x 1 map flattened, as a LayerNorm reads it (("flat", layer): what it gives is flat again)
_VIEWS = ("last", "part", "flat")


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


def _view_step(step: str, node: Any, ins: list, meta: Any, by_node: dict, pending: dict, sizes: set) -> Any:
    """One step of a channel shuffle or split (see VIEW_STEPS): True when the node is absorbed (its state
    in ``pending``, or a size in ``sizes``), the finished layer's (fields, input) when the pattern is
    complete, None when it is no such step (the reverse table then decides)."""
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
    if step in ("reshape", "permute", "swap") and shape is not None:
        done = _partition_step(step, node, src, state, shape, by_node, pending)
        if done is not None:
            return done
    if step == "reshape" and shape is not None:
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
_TRANSPOSE = {"method:transpose", "fn:transpose", "method:permute", "fn:permute"}


def _token_step(key: str, node: Any, ins: list, meta: Any, by_node: dict, item_of: dict, pending: dict) -> bool:
    """ViT's token steps, True when the node is one: a patch convolution's map flattened to D x S and
    transposed to S x D (the conv becomes ``patch_embed``), an expanded parameter (the class token, read by
    the concatenation after it), attention's output taken from its (output, weights) pair, and
    ``x[:, i]`` of a sequence (``select_token``)."""

    src = ins[0] if ins else None
    shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None
    state = pending.get(src)
    if key == "method:expand" and state is not None and state[0] == "param":
        pending[node] = state
        return True
    if key in ("method:reshape", "method:view") and state is not None and state[0] == "param" and meta is not None \
            and len(meta.shape) == 4 and meta.shape[0] == 1 and tuple(meta.shape[2:]) == (1, 1):
        pending[node] = state              # a vector of C as 1 x C x 1 x 1 (timm's gamma.reshape(1, -1, 1, 1))
        return True
    if key in _FLATTEN and state is None and src in by_node and shape is not None and len(shape) == 2:
        conv = item_of.get(by_node[src])
        f = conv.fields if conv is not None else {}
        if conv is not None and conv.cls == "Conv2d" and f.get("kernel") == f.get("stride") and isinstance(f.get("kernel"), int) \
                and f.get("padding") == 0 and f.get("dilation") == 1 and f.get("groups") == 1 \
                and shape == (f["out"], conv.shape[1] * conv.shape[2]):
            pending[node] = ("patches", by_node[src])
            return True
    if key in _TRANSPOSE and state is not None and state[0] == "patches":
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


def _defaults(model: Any) -> dict[str, Any]:
    """The arguments of ``model.forward`` after the input that have a plain default (``attn_mask=None``,
    ``is_causal=False``): traced at it, as a call with one tensor makes them."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty and _plain(p.default)
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _static(node: Any) -> bool:
    """Whether a call computes no tensor: size arithmetic (``x.shape``, ``x.size()``, ``x.dim()``, ``==``,
    ``//`` or ``*`` on sizes, ``_assert_int_or_pair``) or a check (``torch._assert``, None). With the input's
    shape fixed, fake tensors give each such value (a check that fails fails the shape propagation), so
    it is evaluated there and dropped here: no op, and what reads it reads the number."""
    return node.op in ("call_function", "call_method") and "archc_static" in node.meta \
        and _plain(node.meta["archc_static"])


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):       # torch.Size is a tuple
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _owned(node: Any, ins: list, pending: dict, entry: Any) -> dict[str, str]:
    """The module's own parameters and buffers a functional call reads, by the name of the argument each
    is (``{"weight": "bn1.weight", "running_mean": "bn1.running_mean", ...}``): where the call is one the
    ops map with their parameters (its ``from_torch`` entry names its arguments) and reads some."""
    if entry is None or not entry.params or not any(pending.get(a, ("",))[0] in ("own", "param") for a in ins):
        return {}
    out = {}
    for name, a in [*zip(entry.params, node.args[1:]), *node.kwargs.items()]:
        if hasattr(a, "op") and pending.get(a, ("",))[0] in ("own", "param"):
            out[name] = pending[a][1]
    return out


def owned_path(owned: dict[str, str]) -> str:
    """The module that holds the parameters a functional call reads (they must be one module's)."""
    return next(iter(owned.values())).rpartition(".")[0]


def _bound(node: Any, params: tuple[str, ...], sizes: set) -> dict[str, Any]:
    """A functional call's arguments after its input, by name (positional ones bound to ``params``);
    the tensors among them (its module's parameters) left out."""
    out = {name: _value(a, sizes) for name, a in zip(params, node.args[1:]) if not hasattr(a, "op") or a in sizes}
    out.update({k: _value(v, sizes) for k, v in node.kwargs.items() if not hasattr(v, "op") or v in sizes})
    return out


def _resolved(a: Any, sizes: set) -> Any:
    """An argument with the sizes in it (``[x.shape[1] // 4, ...]``) as their values."""
    if isinstance(a, (list, tuple)):
        return type(a)(_resolved(v, sizes) for v in a)
    if isinstance(a, slice):
        return slice(_resolved(a.start, sizes), _resolved(a.stop, sizes), _resolved(a.step, sizes))
    return _value(a, sizes)


def _value(a: Any, sizes: set) -> Any:
    """An argument as the call saw it: a size node's value, else the constant itself."""
    if hasattr(a, "meta") and a in sizes and "archc_static" in a.meta:
        value = a.meta["archc_static"]
        return tuple(value) if isinstance(value, tuple) else value
    return a


def _attribute(model: Any, target: str) -> Any:
    value = model
    for part in target.split("."):
        value = getattr(value, part, None)
    return value


def _head_name(field: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", field) or "head"
    return out if not out[0].isdigit() else f"out{out}"


def _fake_mode() -> Any:
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        return FakeTensorMode(allow_non_fake_inputs=True)
    except (ImportError, TypeError):      # an older torch: the shapes are computed for real
        return None


def _what(node: Any) -> str:
    if node.op == "call_module":
        return f"the module {node.target!r}"
    if node.op == "call_method":
        return f"the tensor method .{node.target}()"
    fn = node.target
    mod = getattr(fn, "__module__", None) or "operator"
    return f"the call {mod.replace('torch.nn.functional', 'F')}.{getattr(fn, '__name__', fn)}()"


def _is_node_list(a: Any) -> bool:
    import torch.fx as fx
    return isinstance(a, (list, tuple)) and any(isinstance(x, fx.Node) for x in a)


def _flat_args(args: Any) -> list:
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _flat_args(a)
        else:
            out.append(a)
    return out


def state_bytes(model: Any, source: str) -> bytes:
    """The module's ``state_dict`` as a safetensors file (its keys the spec's module paths, which the import
    keeps), so that ``archc train SPEC --weights FILE`` starts from them; tensors that share memory are
    written each on its own."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        return save(state, metadata={"archc": f"imported from {source}"[:1000]})
    except Exception as exc:  # noqa: BLE001 (a tensor type safetensors cannot hold: said, not a traceback)
        raise BackendError([error(f"the weights cannot be written as safetensors: {str(exc)[:200]}", "--weights")]) \
            from None
