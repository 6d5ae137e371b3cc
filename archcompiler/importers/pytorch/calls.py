"""One call as torch.fx traced it (:class:`Seen`, what an op module's ``from_torch`` reads), which step of a view
pattern each call is (``VIEW_STEPS``), and how a call without an op is refused."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ...errors import BackendError, error
from ...ops import FROM_TORCH
from .tracer import _attribute


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
        from ...backends.torch import runtime

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
