"""Hand copies of timm's generic layers that several import tests build their timm-like models from (timm
is no dependency: a test writes what timm's module computes, with timm's attribute names)."""

from __future__ import annotations

from torch import nn


class Mlp(nn.Module):
    """timm.layers.Mlp as timm's ViT-like blocks use it: fc1, the activation (GELU; MobileViT's SiLU), fc2
    (dropout 0, no norm)."""

    def __init__(self, dim, hidden, act=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))
