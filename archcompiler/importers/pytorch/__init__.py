"""From PyTorch: a module traced with torch.fx becomes a flat list of spec layers.

Tracing runs the module's own ``forward`` with symbolic values, so this runs the user's code: it is
done only when the user asks for it (``archc import MODULE:CALLABLE``, :func:`import_module`). Each
call maps through ``FROM_TORCH`` (the op registry: each op module's ``from_torch``); the module paths name the layers, so
the spec builds a module with the same state_dict keys. What has no op is refused with the module
path, its class and the closest call archc maps. :mod:`.loading` finds the module, :mod:`.tracer` traces
it, :mod:`.walk` maps its nodes, :mod:`.views` reads the view patterns, :mod:`.calls` holds what a mapping
sees of one call.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from ...errors import BackendError, error
from ...spec.limits import MAX_LAYERS
from ..flat import Flat, place
from .calls import _branches
from .loading import load_callable, state_bytes
from .tracer import _defaults, _fake_mode, _tracer
from .walk import _Walk


def trace(model: Any, input_shape: tuple[int, ...] | None = None, name: str = "model", source: str = "") -> Flat:
    """The flat layers of ``model`` (an ``nn.Module``), traced in evaluation mode with a batch of
    one zero input of ``input_shape`` (default: the model's ``INPUT_SHAPE``, or 3 x 224 x 224)."""
    shape = tuple(input_shape or getattr(model, "INPUT_SHAPE", None) or (3, 224, 224))
    graph, wrapped = _graph(model, shape)
    _propagate(model, graph, wrapped, shape)
    walk = _Walk(model, type(model).__name__)
    for node in graph.nodes:
        walk.step(node)
    result, heads = place(walk.items, walk.result, walk.heads, walk.unique)
    classes = {p: type(m).__name__ for p, m in walk.modules.items() if p}
    return Flat(name, shape, walk.items, source or name, classes, result, heads)


def _graph(model: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The fx graph of ``model``'s forward and the calls the tracer wrapped (see :func:`.tracer._tracer`),
    traced in training mode: auxiliary heads are traced too (they become training-only outputs). A forward
    that fails to trace is refused with the module it failed in."""
    was_training = model.training
    model.train()
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
    return graph, wrapped


def _propagate(model: Any, graph: Any, wrapped: Any, shape: tuple[int, ...]) -> None:
    """Each node's shape (``tensor_meta``) or, for a call without a tensor result, what it gave
    (``archc_static``: a size, a shape, a comparison of sizes), from a run on fake tensors; the wrapped
    calls nothing reads are dropped first. A model that does not run on the input is refused."""
    import torch
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

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
    was_training = model.training
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


__all__ = ["trace", "load_callable", "state_bytes"]
