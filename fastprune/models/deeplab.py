"""DeepLabv3+ (Chen et al., ECCV 2018) with a ResNet-18/50 encoder written here.

Layout of the reference implementation segmentation_models_pytorch (``smp.DeepLabV3Plus``):
ASPP with a 1x1 branch, three depthwise-separable atrous 3x3 branches and image pooling,
1x1 projection (+ dropout 0.5) and a separable 3x3 conv; decoder: 1x1 conv of the stride-4
low-level features to 48 channels, concatenation with the 4x up-sampled ASPP output,
separable 3x3 conv; 1x1 classifier, 4x bilinear up-sampling. Parameters: 26.68M (ResNet-50)
and 12.33M (ResNet-18) with one class — smp's figures. Atrous rates follow the paper:
(6, 12, 18) at output stride 16, doubled at 8.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .resnet import ResNet

_BACKBONES = {"resnet18": 18, "resnet50": 50}


def conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def separable_bn_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (atrous) then pointwise 1x1, BN, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImagePooling(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int = 256, rates: tuple[int, int, int] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout)] +
                                      [separable_bn_relu(cin, cout, r) for r in rates] +
                                      [ImagePooling(cin, cout)])
        self.project = nn.Sequential(conv_bn_relu(cout * 5, cout), nn.Dropout(0.5))
        self.refine = separable_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.project(torch.cat([b(x) for b in self.branches], 1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+; ``backbone`` "resnet18" or "resnet50", ``output_stride`` 16 or 8; ``width``
    scales every layer's channels (1.0: the reference network)."""

    def __init__(self, num_classes: int = 12, backbone: str = "resnet50", output_stride: int = 16,
                 in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if backbone not in _BACKBONES:
            raise ValueError(f"DeepLabV3Plus: backbone must be one of {sorted(_BACKBONES)}, got {backbone!r}")
        if output_stride not in (8, 16):
            raise ValueError(f"DeepLabV3Plus: output_stride must be 8 or 16, got {output_stride!r}")
        if num_classes < 1:
            raise ValueError(f"DeepLabV3Plus: num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.output_stride = num_classes, output_stride
        dilate = (False, False, True) if output_stride == 16 else (False, True, True)
        self.encoder = ResNet(_BACKBONES[backbone], in_channels, None, dilate, width)
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        aspp, low = max(1, round(256 * width)), max(1, round(48 * width))
        self.aspp = ASPP(self.encoder.channels[-1], aspp, rates)
        self.low = conv_bn_relu(self.encoder.channels[1], low)
        self.fuse = separable_bn_relu(aspp + low, aspp)
        self.classifier = nn.Conv2d(aspp, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.features(x)
        low = self.low(feats[1])
        high = F.interpolate(self.aspp(feats[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.classifier(self.fuse(torch.cat([high, low], 1)))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
