"""ResNet-18 and ResNet-50 (He et al. 2016) built here rather than imported from torchvision.

Why: ``import torchvision`` costs about a second per process (it pulls in
torch._dynamo through torchvision.ops), and every worker, ``train``,
``evaluate`` and ``export --evaluate`` process pays it although SAAN needs only
these two networks' layout.

The layout, the submodule names and the order in which modules are built and
initialised are torchvision's (v1.5 bottleneck: the stride on the 3x3 conv;
``conv1 bn1 relu maxpool layer1..4 avgpool fc``), so that

* an ImageNet or self-supervised torchvision state dict loads by key, and
* the same seed draws the same initial weights, bit for bit, and leaves the
  random generator where torchvision's constructor leaves it (tests/test_model_saan.py
  compares both): runs recorded before this module existed replay unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(inputs: int, outputs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(inputs: int, outputs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inputs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inputs, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inputs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inputs, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: tuple[int, int, int, int],
                 num_classes: int = 1000):
        super().__init__()
        self._inputs = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._layer(block, 64, blocks[0])
        self.layer2 = self._layer(block, 128, blocks[1], stride=2)
        self.layer3 = self._layer(block, 256, blocks[2], stride=2)
        self.layer4 = self._layer(block, 512, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        # After every module is built (each constructor drew its default init), in
        # registration order: the order torchvision draws in.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _layer(self, block, planes: int, count: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inputs != planes * block.expansion:
            # built before the first block, as torchvision does (it draws first)
            downsample = nn.Sequential(_conv1x1(self._inputs, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self._inputs, planes, stride, downsample)]
        self._inputs = planes * block.expansion
        layers += [block(self._inputs, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2))


def resnet50() -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3))
