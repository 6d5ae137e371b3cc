"""Measuring what a module really holds: the peak of live activation bytes during a forward pass.

Every tensor an op creates is watched through a weak reference to its storage (views and in-place
results share their input's storage and add nothing); after each op the storages that died are
dropped. The input tensor the caller holds counts for the whole pass. Parameters and buffers,
which exist before the pass, do not count. This is the independent check of archc's memory model
(``archc flops``' peak activation memory).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensors(TorchDispatchMode):
    """Track the bytes of storages created while active; ``peak`` is the largest total alive at
    any op boundary (plus any storages registered with :meth:`hold`)."""

    def __init__(self, ignore: Any = ()) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0
        self.ignore = {t.untyped_storage()._cdata for t in ignore}   # parameters, buffers (views of them too)

    def hold(self, tensor: torch.Tensor) -> None:
        self._add(tensor)
        self.peak = max(self.peak, self.current)

    def _add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.live and key not in self.ignore:
            ref = StorageWeakRef(storage)
            self.live[key] = (ref, storage.nbytes())
            self.current += storage.nbytes()

    def _sweep(self) -> None:
        for key, (ref, size) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.current -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._add(t)
        self.peak = max(self.peak, self.current)
        return out


def measure_training_peak_bytes(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                                optimizer: str = "sgd") -> int:
    """The peak of live bytes during one training step (forward with the auxiliary heads, the spec's
    losses, backward, optimizer step) in steady state: the parameters, the optimizer's state (made by
    a first step) and the input count; gradients start unset (``zero_grad(set_to_none=True)``)."""
    model.train()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9) if optimizer == "sgd" else \
        torch.optim.Adam(params, lr=1e-3) if optimizer == "adam" else torch.optim.AdamW(params, lr=1e-3)
    loss = model.loss(model(x), target)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    del loss
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim() > 0]
    with LiveTensors() as tracker:
        for t in [*params, *model.buffers(), *state, x]:
            tracker.hold(t)
        loss = model.loss(model(x), target)
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return tracker.peak


def measure_peak_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The peak of live activation bytes of one inference forward pass of ``model`` on ``x``
    (eval mode, no autograd), the input included."""
    model.eval()
    with torch.no_grad(), LiveTensors(ignore=[*model.parameters(), *model.buffers()]) as tracker:
        tracker.hold(x)
        out = model(x)
    del out
    return tracker.peak
