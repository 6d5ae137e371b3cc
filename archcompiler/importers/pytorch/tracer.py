"""The torch.fx tracer archc uses (a mapped class is one leaf; sizes as numbers on a retrace) and the reading of a
traced call's arguments: their static values, the module that owns a parameter, the batch's source."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from ...ops import FROM_TORCH
from .loading import module_key


def _tracer(model: Any, sized: tuple[int, ...] | None = None) -> Any:
    """torch.fx's tracer with archc's leaves; with ``sized`` (an input shape, batch first), sizes read while
    tracing (``x.shape``, ``x.size()``, ``x.dim()``) are the numbers they have on that input, so Python code
    on them (an ``if``, ``math.ceil``) runs as it would for that input (see :func:`_sized_proxy`)."""
    import torch.fx as fx

    from ...backends.torch.runtime import IN_GENERATED

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


def _batch_source(node: Any, by_node: dict, sizes: set, first: int = 1) -> list:
    """The layer output whose size an expansion reads (``token.expand(x.shape[0], -1, -1)``: x), found back
    through the size arithmetic of its arguments from the ``first`` (a few steps at most); [] where there is
    none."""
    todo = [a for a in _flat_args(node.args[first:]) if hasattr(a, "op") and a in sizes]
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
