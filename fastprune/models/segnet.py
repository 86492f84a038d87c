"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017): VGG16-BN encoder, decoder that
up-samples with the encoder's max-pooling indices (max-unpool), mirror-image conv stacks.

Layout of the reference PyTorch port (delta-onera/segnet_pytorch): every conv 3x3 with bias,
BN and ReLU except the last (3x3 conv to the classes); 29.45M parameters for 12 classes, the
"29.5M" of the paper's Table 6.
"""
from __future__ import annotations

import torch
from torch import nn

from .vgg import conv_bn_relu

# encoder stages (VGG16) and decoder stages (mirror), as channel lists
_ENC = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_DEC = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))


class SegNet(nn.Module):
    """SegNet with ``enc[i]`` / ``dec[i]`` stages (``nn.Sequential`` of conv-BN-ReLU) and a final
    ``classifier`` conv. Any input of at least 32x32 (odd sizes are restored by unpooling to
    the recorded sizes, e.g. CamVid's 360x480). ``width`` scales every layer's channels (1.0:
    the paper's network)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 12, width: float = 1.0) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or not width > 0:
            raise ValueError(f"SegNet: in_channels and num_classes must be >= 1 and width > 0, got "
                             f"{in_channels}, {num_classes}, {width}")
        self.num_classes = num_classes
        enc, c = [], in_channels
        for stage in _ENC:
            layers: list[nn.Module] = []
            for v in stage:
                layers += conv_bn_relu(c, max(1, round(v * width)))
                c = max(1, round(v * width))
            enc.append(nn.Sequential(*layers))
        dec = []
        for stage in _DEC:
            layers = []
            for v in stage:
                layers += conv_bn_relu(c, max(1, round(v * width)))
                c = max(1, round(v * width))
            dec.append(nn.Sequential(*layers))
        self.enc = nn.ModuleList(enc)
        self.dec = nn.ModuleList(dec)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.classifier = nn.Conv2d(c, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 32 or x.shape[-2] < 32:
            raise ValueError(f"SegNet: input height and width must be >= 32, got {tuple(x.shape[-2:])}")
        indices, sizes = [], []
        for stage in self.enc:
            x = stage(x)
            sizes.append(x.shape)
            x, idx = self.pool(x)
            indices.append(idx)
        for stage in self.dec:
            x = self.unpool(x, indices.pop(), output_size=sizes.pop())
            x = stage(x)
        return self.classifier(x)
