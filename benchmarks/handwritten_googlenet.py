"""A hand-written GoogLeNet in the style of torchvision's models/googlenet.py, as the baseline
for benchmarks/torch_backend.py.  Same module names as torchvision (so the same state_dict),
same ops: BasicConv2d (conv without bias, BatchNorm eps 0.001, in-place ReLU), ceil-mode pools,
3x3 in the "5x5" branch, auxiliary heads in training mode only."""

from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Outputs = namedtuple("Outputs", ["logits", "aux_logits2", "aux_logits1"])


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(cin, n1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, n3x3red, kernel_size=1),
                                     BasicConv2d(n3x3red, n3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, n5x5red, kernel_size=1),
                                     BasicConv2d(n5x5red, n5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=0.7)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))          # N x 512 x 4 x 4 (on 4a)
        x = self.conv(x)                              # N x 128 x 4 x 4
        x = torch.flatten(x, 1)                       # N x 2048
        x = F.relu(self.fc1(x), inplace=True)         # N x 1024
        x = self.dropout(x)
        return self.fc2(x)                            # N x num_classes


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes)
        self.aux2 = InceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.2)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor):
        x = self.conv1(x)              # N x 64 x 112 x 112
        x = self.maxpool1(x)           # N x 64 x 56 x 56
        x = self.conv2(x)              # N x 64 x 56 x 56
        x = self.conv3(x)              # N x 192 x 56 x 56
        x = self.maxpool2(x)           # N x 192 x 28 x 28
        x = self.inception3a(x)        # N x 256 x 28 x 28
        x = self.inception3b(x)        # N x 480 x 28 x 28
        x = self.maxpool3(x)           # N x 480 x 14 x 14
        x = self.inception4a(x)        # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.training else None
        x = self.inception4b(x)        # N x 512 x 14 x 14
        x = self.inception4c(x)        # N x 512 x 14 x 14
        x = self.inception4d(x)        # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.training else None
        x = self.inception4e(x)        # N x 832 x 14 x 14
        x = self.maxpool4(x)           # N x 832 x 7 x 7
        x = self.inception5a(x)        # N x 832 x 7 x 7
        x = self.inception5b(x)        # N x 1024 x 7 x 7
        x = self.avgpool(x)            # N x 1024 x 1 x 1
        x = torch.flatten(x, 1)        # N x 1024
        x = self.dropout(x)
        x = self.fc(x)                 # N x 1000
        if self.training:
            return Outputs(x, aux2, aux1)
        return x
