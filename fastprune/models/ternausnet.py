"""TernausNet (Iglovikov & Shvets, 2018, arXiv:1801.05746): U-Net with a VGG11 encoder.

Layer for layer the reference ``UNet11`` of ternaus/TernausNet (num_filters=32): VGG11 conv
layers (3x3, bias, ReLU, no BN) as encoder; decoder blocks = conv3x3+ReLU then 3x3 stride-2
transposed conv (+ReLU); 1x1 classifier. 22.93M parameters with one output class.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvRelu(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class DecoderBlock(nn.Sequential):
    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__(ConvRelu(cin, cmid),
                         nn.ConvTranspose2d(cmid, cout, 3, stride=2, padding=1, output_padding=1),
                         nn.ReLU(inplace=True))


class TernausNet(nn.Module):
    """TernausNet-11. ``num_classes=1`` gives one logit map (binary: building if > 0).
    ``width`` scales the VGG-11 encoder's channels (1.0: the paper's 64 ... 512; the decoder
    follows ``num_filters``, which is 32 in the paper)."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32,
                 width: float = 1.0) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or num_filters < 1 or not width > 0:
            raise ValueError("TernausNet: num_classes, in_channels, num_filters must be >= 1 and width > 0")
        self.num_classes = num_classes
        f = num_filters
        e1, e2, e3, e4 = (max(1, round(c * width)) for c in (64, 128, 256, 512))
        self.pool = nn.MaxPool2d(2, 2)
        self.conv1 = ConvRelu(in_channels, e1)
        self.conv2 = ConvRelu(e1, e2)
        self.conv3s, self.conv3 = ConvRelu(e2, e3), ConvRelu(e3, e3)
        self.conv4s, self.conv4 = ConvRelu(e3, e4), ConvRelu(e4, e4)
        self.conv5s, self.conv5 = ConvRelu(e4, e4), ConvRelu(e4, e4)
        self.center = DecoderBlock(e4, f * 16, f * 8)
        self.dec5 = DecoderBlock(f * 8 + e4, f * 16, f * 8)
        self.dec4 = DecoderBlock(f * 8 + e4, f * 16, f * 4)
        self.dec3 = DecoderBlock(e3 + f * 4, f * 8, f * 2)
        self.dec2 = DecoderBlock(e2 + f * 2, f * 4, f)
        self.dec1 = ConvRelu(e1 + f, f)
        self.final = nn.Conv2d(f, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"TernausNet: input height and width must be divisible by 32, got {tuple(x.shape[-2:])}")
        c1 = self.conv1(x)
        c2 = self.conv2(self.pool(c1))
        c3 = self.conv3(self.conv3s(self.pool(c2)))
        c4 = self.conv4(self.conv4s(self.pool(c3)))
        c5 = self.conv5(self.conv5s(self.pool(c4)))
        center = self.center(self.pool(c5))
        d5 = self.dec5(torch.cat([center, c5], 1))
        d4 = self.dec4(torch.cat([d5, c4], 1))
        d3 = self.dec3(torch.cat([d4, c3], 1))
        d2 = self.dec2(torch.cat([d3, c2], 1))
        d1 = self.dec1(torch.cat([d2, c1], 1))
        return self.final(d1)
