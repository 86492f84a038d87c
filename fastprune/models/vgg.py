"""VGG networks written here: VGG16-BN for CIFAR-10 and the VGG conv stacks used as encoders.

``VGG16`` is the CIFAR-10 variant of the pruning literature (Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017, Table 1: 1.5e7 parameters, 3.13e8 FLOPs (multiply-adds) at
32x32): 13 conv3x3 + BN + ReLU, five 2x2 max-pools, classifier 512 -> 512 -> 10.
"""
from __future__ import annotations

import torch
from torch import nn

VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def conv_bn_relu(cin: int, cout: int, batch_norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def vgg_features(cfg: tuple, in_channels: int = 3, batch_norm: bool = True) -> nn.Sequential:
    """torchvision-style ``features``: conv(3x3, bias) [+ BN] + ReLU per entry, "M" = max-pool."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += conv_bn_relu(c, int(v), batch_norm)
            c = int(v)
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG16-BN for 32x32 inputs (CIFAR-10): ``features`` then ``classifier`` (512-512-classes).

    ``width`` scales every layer's channels (``width=0.125``: 8 ... 64 channels, for tests and
    quick runs; 1.0 is the paper's network)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5,
                 width: float = 1.0) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or not width > 0:
            raise ValueError(f"VGG16: num_classes and in_channels must be >= 1 and width > 0, got "
                             f"{num_classes}, {in_channels}, {width}")
        self.num_classes = num_classes
        cfg = tuple(v if v == "M" else max(1, round(int(v) * width)) for v in VGG16_CFG)
        hidden = int(cfg[-2])
        self.features = vgg_features(cfg, in_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)  # identity at 32x32 (the map is already 1x1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
