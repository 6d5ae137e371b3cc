"""The torch module of ``gem_pool``: generated modules import it (``from archc_gem_pool.torch import GeM``)."""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval with No Human
    Annotation", TPAMI 2018): each channel's (mean over H x W of clamp(x, eps) ** p) ** (1 / p), N x C x 1 x 1,
    with the exponent p one learned parameter (p = 1: average pooling; large p: towards max pooling)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=[-2, -1], keepdim=True).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"        # p is a parameter: its value is in the state_dict
