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

    @property
    def runtime(self) -> Any:
        """archc's torch helper classes (what its generated modules hold), for a mapping that compares a
        module's buffers with what archc would build (EVA's rotary table): op modules never import torch."""
        from ..backends.torch import runtime

        return runtime


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
    "fn:pad": "pad", "fn:roll": "roll",
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


def module_key(m: Any) -> str:
    """The ``from_torch`` key of a module: its class name, or its class qualified by its package where an op
    reads that class alone (timm has several classes named ``Attention``: EfficientFormer's is not ViT's)."""
    qualified = f"{type(m).__module__}.{type(m).__name__}"
    return qualified if qualified in FROM_TORCH else type(m).__name__


def _tracer(model: Any, sized: tuple[int, ...] | None = None) -> Any:
    """torch.fx's tracer with archc's leaves; with ``sized`` (an input shape, batch first), sizes read while
    tracing (``x.shape``, ``x.size()``, ``x.dim()``) are the numbers they have on that input, so Python code
    on them (an ``if``, ``math.ceil``) runs as it would for that input (see :func:`_sized_proxy`)."""
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
            entry = FROM_TORCH.get(module_key(m))
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

        def proxy(self, node: Any) -> Any:
            return proxy_cls(node, self) if sized is not None else super().proxy(node)

        def trace(self, root: Any, concrete_args: Any = None) -> Any:
            if sized is None:
                return super().trace(root, concrete_args)
            import torch

            kept = [(b, b.clone()) for b in root.buffers()]     # what the sizes' run changes in place (a BatchNorm's
            try:                                                  # num_batches_tracked) is put back
                return super().trace(root, concrete_args)
            finally:
                with torch.no_grad():
                    for b, v in kept:
                        b.copy_(v)

    proxy_cls, value_of = _sized_proxy(sized) if sized is not None else (None, None)
    tracer = Tracer()
    tracer.value_of = value_of
    return tracer, wrapped


def _sized_proxy(sized: tuple[int, ...]) -> tuple[Any, Any]:
    """A proxy class whose sizes are numbers, and the function that gives a traced node's value: the graph
    traced so far run up to that node on a zero input of ``sized`` in fake tensors (nothing computed, the
    module's weights untouched), each node once."""
    import torch
    import torch.fx as fx

    # the module calls run for real, not traced again: torch.fx's patches of them lifted meanwhile (private)
    untraced = getattr(fx._symbolic_trace, "_maybe_revert_all_patches", contextlib.nullcontext)

    def value_of(tracer: Any, node: Any) -> Any:
        run = getattr(tracer, "sized_run", None)
        if run is None:
            run = tracer.sized_run = fx.Interpreter(tracer.root, garbage_collect_values=False, graph=tracer.graph)
            run.args_iter = iter([torch.zeros(sized)])
            tracer.sized_mode = _fake_mode()
        for n in tracer.graph.nodes:
            if n not in run.env:
                with untraced(), tracer.sized_mode or contextlib.nullcontext(), torch.no_grad():
                    run.env[n] = run.run_node(n)
            if n is node:
                break
        return run.env[node]

    class SizedProxy(fx.Proxy):
        def _value(self) -> Any:
            value = self.tracer.value_of(self.tracer, self.node)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{self.node.name} is no tensor: it has no size")
            return value

        @property
        def shape(self) -> Any:
            return self._value().shape

        @property
        def ndim(self) -> int:
            return self._value().dim()

        def size(self, dim: int | None = None) -> Any:
            return self._value().size() if dim is None else self._value().size(dim)

        def dim(self) -> int:
            return self._value().dim()

    return SizedProxy, value_of


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


def _branches(exc: BaseException) -> bool:
    """Whether tracing failed on Python control flow over a traced value (an ``if`` or a loop on it)."""
    return "control flow" in str(exc) or "iterate" in str(exc)


def _prepended(x: Any, n: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The sequence's shape before and after each of ``n`` tokens prepended to ``x`` in turn."""
    s, *rest = tuple(x.meta["tensor_meta"].shape[1:]) if "tensor_meta" in x.meta else (0,)
    return [((s + k, *rest), (s + k + 1, *rest)) for k in range(n)]


def _two_params(node: Any, key: str, path: str, ins: list, params: list, pending: dict, model: Any) -> tuple:
    """A call of a layer's output and two parameters of one module (ResMLP's ``torch.addcmul(self.beta, self.alpha,
    x)``): the key ``params:NAME``, the module's path (the layer's), the layer's output, and ``params`` (each
    parameter's argument position -> its name and shape) and ``at`` (the output's position) for the op; the call
    as it was where the parameters are not one sub-module's (refused below: a parameter read directly)."""
    x = next(a for a in ins if a not in params)
    owners = {pending[a][1].rpartition(".")[0] for a in params}
    if len(owners) != 1 or "" in owners:
        return key, path, ins, {}
    at = {id(a): i for i, a in enumerate(node.args)}
    named = {at[id(a)]: (pending[a][1].rpartition(".")[2], tuple(_attribute(model, pending[a][1]).shape))
             for a in params if id(a) in at}
    return f"params:{key.split(':')[-1]}", owners.pop(), [x], {"params": named, "at": at.get(id(x))}


def _number(node: Any, ins: list) -> dict[str, Any] | None:
    """A call of one layer's output and a Python number (``x * 1.7015``, ``1 - x``, ``0 + x``): the number as
    ``value`` and ``first`` where it comes before the tensor; None for another call."""
    args = list(node.args)
    if len(ins) != 1 or len(args) != 2 or node.kwargs or not any(a is ins[0] for a in args):
        return None
    other = args[1] if args[0] is ins[0] else args[0]
    if isinstance(other, bool) or not isinstance(other, (int, float)):
        return None
    return {"value": float(other), "first": args[0] is not ins[0]}


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
# patch groups (("patches", layer, p, ...), see _patch_step)
_VIEWS = ("last", "part", "flat", "windows", "rows", "wcut3", "patches")


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
        if state is None and src in by_node and len(shape) == 2:
            c = tuple(src.meta["tensor_meta"].shape[1:])
            if len(c) == 3 and shape == (c[0], c[1] * c[2]):
                pending[node] = ("positions", by_node[src], c)      # the map's positions in a row: x.flatten(2)
                return True
        return None
    if step in ("swap", "permute") and state is not None and state[0] == "positions" and shape is not None:
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
_TRANSPOSE = {"method:transpose", "fn:transpose", "method:permute", "fn:permute"}


def _token_step(key: str, node: Any, ins: list, meta: Any, by_node: dict, item_of: dict, pending: dict) -> bool:
    """ViT's token steps, True when the node is one: a patch convolution's map flattened to D x S and
    transposed to S x D (the conv becomes ``patch_embed``), an expanded parameter (the class token, read by
    the concatenation after it), attention's output taken from its (output, weights) pair, and
    ``x[:, i]`` of a sequence (``select_token``)."""

    src = ins[0] if ins else None
    shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None
    state = pending.get(src)
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


def _batch_source(node: Any, by_node: dict, sizes: set) -> list:
    """The layer output whose size an expansion reads (``token.expand(x.shape[0], -1, -1)``: x), found back
    through the size arithmetic of its arguments (a few steps at most); [] where there is none."""
    todo = [a for a in _flat_args(node.args[1:]) if hasattr(a, "op") and a in sizes]
    for _ in range(16):
        if not todo:
            break
        a = todo.pop(0)
        for b in (b for b in _flat_args(a.args) if hasattr(b, "op")):
            if b in by_node:
                return [b]
            if b in sizes:
                todo.append(b)
    return []


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


def _is_node_list(a: Any, sizes: Any = ()) -> bool:
    """Whether ``a`` is a list holding a traced value (one not in ``sizes``: a tensor)."""
    import torch.fx as fx
    return isinstance(a, (list, tuple)) and any(isinstance(x, fx.Node) and x not in sizes for x in a)


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
