"""ResNet-18/34/50/101 (He et al., 2016) written here, with dilation for dense prediction.

The "v1.5" layout of torchvision (stride in the 3x3 conv of the bottleneck): with the
classifier (``num_classes``) ResNet-18 has 11,689,512 parameters / 1.82 GMACs and ResNet-50
25,557,032 / 4.09 GMACs at 224x224, torchvision's published figures. As a segmentation
encoder (``num_classes=None``) it returns the feature maps of every stage.
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


_SPECS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
          50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """ResNet of ``depth`` in {18, 34, 50, 101}. ``dilate`` = which of layer2..4 trade their
    stride for dilation (output stride 16: (False, False, True); 8: (False, True, True)).
    ``width`` scales every layer's channels (1.0: the standard network)."""

    def __init__(self, depth: int = 50, in_channels: int = 3, num_classes: int | None = None,
                 dilate: tuple[bool, bool, bool] = (False, False, False), width: float = 1.0) -> None:
        super().__init__()
        if depth not in _SPECS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_SPECS)}, got {depth!r}")
        if not width > 0:
            raise ValueError(f"ResNet: width must be > 0, got {width}")
        block, counts = _SPECS[depth]
        w = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._cin, self._dilation = w[0], 1
        self.layer1 = self._layer(block, w[0], counts[0], 1, False)
        self.layer2 = self._layer(block, w[1], counts[1], 2, dilate[0])
        self.layer3 = self._layer(block, w[2], counts[2], 2, dilate[1])
        self.layer4 = self._layer(block, w[3], counts[3], 2, dilate[2])
        self.channels = (w[0],) + tuple(c * block.expansion for c in w)
        self.fc = nn.Linear(w[3] * block.expansion, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch (Goyal et al.)
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _layer(self, block: type, width: int, n: int, stride: int, dilate: bool) -> nn.Sequential:
        prev = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._cin != width * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self._cin, width * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(width * block.expansion))
        layers = [block(self._cin, width, stride, prev, downsample)]
        self._cin = width * block.expansion
        layers += [block(self._cin, width, 1, self._dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stem (stride 2) and of layer1..layer4."""
        x = self.relu(self.bn1(self.conv1(x)))
        out = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        feats = self.features(x)
        if self.fc is None:
            return feats
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(feats[-1], 1), 1))
