"""U-Net (Ronneberger et al., 2015) with configurable width/depth, and depth-level removal.

The classic configuration (``base_width=64, depth=4, batch_norm=True, upsample="transpose"``)
is the layer-for-layer layout of milesial/Pytorch-UNet: double 3x3 conv (bias-free when followed
by batch norm), 2x2 max-pool, 2x2 stride-2 transposed conv halving the channels, concatenation
with the skip, double conv, 1x1 classifier.

``upsample="bilinear"`` up-samples without a learned layer and concatenates the full-width
deeper features with the skip (in = 3·out channels), so that every level has the same
structure and a level can still be removed (the channel-halving trick of milesial's bilinear
variant would couple neighbouring levels).
"""
from __future__ import annotations

import copy
import torch
from torch import nn
from torch.nn import functional as F

_UPSAMPLE = ("transpose", "bilinear")


class DoubleConv(nn.Sequential):
    """(3x3 conv -> [BN] -> ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            layers.append(nn.Conv2d(cin, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max-pool then a double conv: one encoder level."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm))


class Up(nn.Module):
    """Up-sample the deeper features, concatenate the skip, double conv: one decoder level."""

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int,
                 batch_norm: bool = True, upsample: str = "transpose") -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(deep_channels, deep_channels // 2, 2, stride=2)
            cat = deep_channels // 2 + skip_channels
        else:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            cat = deep_channels + skip_channels
        self.conv = DoubleConv(cat, out_channels, batch_norm)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(deep)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:  # odd input sizes: pad the up-sampled map to the skip's size
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net: ``depth`` down-samplings; level i has ``base_width * 2**i`` channels.

    Modules: ``inc`` (level 0), ``downs[i]`` (level i+1), ``ups[j]`` (decoder, deepest first),
    ``outc`` (1x1 classifier). Returns logits (N, num_classes, H, W).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_width: int = 64,
                 depth: int = 4, batch_norm: bool = True, upsample: str = "transpose") -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("base_width", base_width)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"UNet: {name} must be a positive int, got {v!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"UNet: depth must be an int >= 0, got {depth!r}")
        if upsample not in _UPSAMPLE:
            raise ValueError(f"UNet: upsample must be one of {_UPSAMPLE}, got {upsample!r}")
        if upsample == "transpose" and base_width % 2:
            raise ValueError("UNet: base_width must be even with upsample='transpose'")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_width, self.depth = base_width, depth
        self.batch_norm, self.upsample = batch_norm, upsample
        w = [base_width * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, w[0], batch_norm)
        self.downs = nn.ModuleList(Down(w[i], w[i + 1], batch_norm) for i in range(depth))
        self.ups = nn.ModuleList(Up(w[i + 1], w[i], w[i], batch_norm, upsample)
                                 for i in reversed(range(depth)))
        self.outc = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


def level_layers(model: UNet) -> dict[int, list[str]]:
    """Names of the conv layers of each removable level d = 1..depth.

    Level d is the encoder block ``downs[d-1]`` plus the decoder block that consumes its
    output, ``ups[depth-d]`` (up-conv and double conv). Removing levels always starts at d =
    depth (the deepest), so the result of removing n levels is a U-Net of depth - n.
    """
    out: dict[int, list[str]] = {}
    for d in range(1, len(model.downs) + 1):
        j = len(model.downs) - d
        names = [f"downs.{d - 1}.{n}" for n, m in model.downs[d - 1].named_modules()
                 if isinstance(m, nn.Conv2d)]
        names += [f"ups.{j}.{n}" for n, m in model.ups[j].named_modules()
                  if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        out[d] = names
    return out


def remove_levels(model: UNet, n_levels: int = 1) -> UNet:
    """A copy of ``model`` with its ``n_levels`` deepest levels removed (weights of the rest kept).

    Drops ``downs[-n:]`` (deepest encoder blocks) and ``ups[:n]`` (their decoder blocks and
    up-convolutions); the new bottleneck is the old level ``depth - n``. The input model is
    not modified.
    """
    if not isinstance(model, UNet):
        raise TypeError(f"remove_levels: expected a fastprune UNet, got {type(model).__name__}")
    depth = len(model.downs)
    if not isinstance(n_levels, int) or not 0 <= n_levels <= depth:
        raise ValueError(f"remove_levels: n_levels must be an int in [0, {depth}], got {n_levels!r}")
    if 0 < n_levels < depth and model.upsample == "transpose":
        # The surviving up-conv must accept the new bottleneck's channels (a pruned model may
        # have decoupled them).
        bottleneck = _out_channels(model.downs[depth - n_levels - 1] if depth - n_levels > 0 else model.inc)
        expect = model.ups[n_levels].up.in_channels
        if bottleneck != expect:
            raise ValueError(f"remove_levels: new bottleneck has {bottleneck} channels but "
                             f"ups.{n_levels}.up expects {expect}; prune after removing levels")
    out = copy.deepcopy(model)
    out.downs = nn.ModuleList(list(out.downs)[: depth - n_levels])
    out.ups = nn.ModuleList(list(out.ups)[n_levels:])
    out.depth = depth - n_levels
    return out


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels
