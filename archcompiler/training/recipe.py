"""The spec's training recipe (``train:``): its optimizer and its learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..spec import Spec

# ----------------------------------------------------------------------------- recipe

def _optimizer(spec: Spec, params: Any) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0,
                               weight_decay=t.weight_decay)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(spec: Spec, epoch: int) -> float:
    """The schedule: the learning rate of ``epoch`` (0-based) over the base rate."""
    t = spec.train
    if t.schedule == "step":
        return t.step_factor ** (epoch // t.step_every)
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch, t.epochs) / t.epochs))
    return 1.0
