"""Small test architectures covering the coupling patterns of real CNNs.

Each `ZOO` entry is (factory, example input shape). The models are independent
re-implementations of well-known families (no torchvision), small enough for CPU tests.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, d: int = 1, g: int = 1, act: type = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, d * (k // 2), dilation=d, groups=g, bias=False),
                         nn.BatchNorm2d(cout), act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish) else act())


class VGG(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(cbr(3, 16), cbr(16, 16), nn.MaxPool2d(2), cbr(16, 32), cbr(32, 32), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 24, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(24 * 4 * 4, 40), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                        nn.Linear(40, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != c:
            self.downsample = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += idt
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int = 1, groups: int = 1, width: int | None = None) -> None:
        super().__init__()
        w = width or c
        self.conv1 = nn.Conv2d(cin, w, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = nn.Conv2d(w, c * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != c * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, c * 4, 1, stride, bias=False), nn.BatchNorm2d(c * 4))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """torchvision-style ResNet; `block` BasicBlock or Bottleneck, `layers` blocks per stage."""

    def __init__(self, block: type = BasicBlock, layers: tuple[int, ...] = (2, 2), widths: tuple[int, ...] = (8, 16),
                 classes: int = 10, stem: int = 8, groups: int = 1, width_per_group: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = stem, []
        for i, (n, c) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                kw = {}
                if block is Bottleneck:
                    kw = {"groups": groups, "width": (width_per_group * groups if width_per_group else None)}
                blocks.append(block(cin, c, 2 if (j == 0 and i > 0) else 1, **kw))
                cin = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50_like(classes: int = 1000) -> ResNet:
    """ResNet-50 shape (3-4-6-3 bottlenecks, 64..512 widths): ~25.6M parameters."""
    return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), classes, stem=64)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [cbr(cin, hid, 1, act=nn.ReLU6)]
        layers += [cbr(hid, hid, 3, stride, g=hid, act=nn.ReLU6), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        cfg = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2)]
        layers = [cbr(3, 16, 3, 2, act=nn.ReLU6)]
        cin = 16
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(cbr(cin, 32, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.classifier(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // r), 1)
        self.fc2 = nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(F.silu(self.fc1(s)))
        return x * torch.sigmoid(s)


class MBConv(nn.Module):
    """EfficientNet block: expand, depthwise, squeeze-excite, project, residual."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hid = cin * expand
        self.expand = cbr(cin, hid, 1, act=nn.SiLU)
        self.dw = cbr(hid, hid, 3, stride, g=hid, act=nn.SiLU)
        self.se = SqueezeExcite(hid)
        self.project = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.res else y


class EfficientNetLike(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8, 3, 2, act=nn.SiLU)
        self.blocks = nn.Sequential(MBConv(8, 8, 1), MBConv(8, 16, 2), MBConv(16, 16, 1))
        self.head = cbr(16, 32, 1, act=nn.SiLU)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(2 * growth), nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(feats, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseNet(nn.Module):
    def __init__(self, classes: int = 10, growth: int = 6) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.block1 = nn.ModuleList([DenseLayer(12 + i * growth, growth) for i in range(3)])
        c = 12 + 3 * growth
        self.trans = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 16, 1, bias=False), nn.AvgPool2d(2))
        self.block2 = nn.ModuleList([DenseLayer(16 + i * growth, growth) for i in range(2)])
        self.norm5 = nn.BatchNorm2d(16 + 2 * growth)
        self.fc = nn.Linear(16 + 2 * growth, classes)

    def forward(self, x):
        feats = [self.conv0(x)]
        for layer in self.block1:
            feats.append(layer(feats))
        feats = [self.trans(torch.cat(feats, 1))]
        for layer in self.block2:
            feats.append(layer(feats))
        x = F.relu(self.norm5(torch.cat(feats, 1)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class UNet(nn.Module):
    def __init__(self, classes: int = 3, c: int = 8) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(cbr(3, c), cbr(c, c))
        self.enc2 = nn.Sequential(cbr(c, 2 * c), cbr(2 * c, 2 * c))
        self.bott = nn.Sequential(cbr(2 * c, 4 * c), cbr(4 * c, 4 * c))
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, 2)
        self.dec2 = nn.Sequential(cbr(4 * c, 2 * c), cbr(2 * c, 2 * c))
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, 2)
        self.dec1 = nn.Sequential(cbr(2 * c, c), cbr(c, c))
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bott(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([e1, self.up1(d2)], dim=1))
        return self.head(d1)


class SegNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.e1, self.e2 = nn.Sequential(cbr(3, 8), cbr(8, 8)), nn.Sequential(cbr(8, 16), cbr(16, 16))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.d2 = nn.Sequential(cbr(16, 16), cbr(16, 8))
        self.d1 = nn.Sequential(cbr(8, 8), nn.Conv2d(8, classes, 3, padding=1))

    def forward(self, x):
        x, i1 = self.pool(self.e1(x))
        x, i2 = self.pool(self.e2(x))
        x = self.d2(self.unpool(x, i2))
        return self.d1(self.unpool(x, i1))


class ASPP(nn.Module):
    def __init__(self, cin: int, c: int, rates: tuple[int, ...] = (2, 4)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([cbr(cin, c, 1)] + [cbr(cin, c, 3, d=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.project = nn.Sequential(cbr(c * (len(rates) + 2), c, 1), nn.Dropout(0.1))

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        p = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat(outs + [p], 1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.low = nn.Sequential(cbr(3, 8, 3, 2), cbr(8, 12))
        self.high = nn.Sequential(cbr(12, 16, 3, 2), cbr(16, 24, 3, 2))
        self.aspp = ASPP(24, 16)
        self.reduce = cbr(12, 6, 1)
        self.decoder = nn.Sequential(cbr(16 + 6, 16), cbr(16, 16))
        self.cls = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        size = x.shape[-2:]
        low = self.low(x)
        y = self.aspp(self.high(low))
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.decoder(torch.cat([y, self.reduce(low)], 1))
        return {"out": F.interpolate(self.cls(y), size=size, mode="bilinear", align_corners=False)}


class Coverage(nn.Module):
    """Grouped/depthwise convs, GroupNorm, InstanceNorm, Conv1d-free 2-D ops, chunk, residual
    add/sub/mul, interpolate, adaptive pooling, dropout, many activations, in-place ops,
    PReLU, a layer-scale parameter, a depthwise multiplier, flatten -> Linear, tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn1 = nn.GroupNorm(4, 16)
        self.c1b = nn.Conv2d(16, 16, 1)
        self.g2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)  # grouped
        self.in2 = nn.InstanceNorm2d(16, affine=True)
        self.dwm = nn.Conv2d(16, 32, 3, padding=1, groups=16)  # depthwise, multiplier 2
        self.bn3 = nn.BatchNorm2d(32)
        self.pw = nn.Conv2d(32, 12, 1)
        self.prelu = nn.PReLU(12)
        self.a = nn.Conv2d(12, 12, 3, padding=1)
        self.b = nn.Conv2d(12, 12, 1)
        self.gamma = nn.Parameter(torch.rand(12) + 0.5)
        self.ha = nn.Conv2d(6, 8, 1)
        self.hb = nn.Conv2d(6, 8, 1)
        self.inorm = nn.InstanceNorm2d(16)
        self.down = nn.Conv2d(16, 10, 3, stride=2, padding=1)
        self.gate = nn.Conv2d(10, 10, 1)
        self.drop = nn.Dropout2d(0.3)
        self.fc = nn.Linear(10 * 2 * 2, 7)
        self.aux = nn.Conv2d(10, 4, 1)

    def forward(self, x):
        x = F.gelu(self.gn1(self.c1(x)))
        x = F.leaky_relu(self.in2(self.g2(self.c1b(x))), 0.1)
        x = F.elu(self.bn3(self.dwm(x)))
        x = self.prelu(self.pw(x))
        y = F.hardswish(self.a(x)).clone()
        y.mul_(1.5).relu_()
        z = self.b(x)
        x = (x + y) - z * self.gamma[:, None, None]
        x = F.mish(x) * torch.sigmoid(self.b(x))
        p, q = x.chunk(2, dim=1)
        x = torch.cat([F.silu(self.ha(p)), torch.tanh(self.hb(q))], 1)
        x = self.inorm(F.softplus(x) - math.log(2.0))
        x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu6(self.down(x))
        x = x * F.hardsigmoid(self.gate(F.adaptive_max_pool2d(x, 1)))
        x = self.drop(F.selu(x))
        x = F.adaptive_avg_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1)), self.aux(x).sum((2, 3))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv1d(4, 12, 3, padding=1), nn.BatchNorm1d(12)
        self.c2, self.bn2 = nn.Conv1d(12, 12, 3, padding=1, groups=12), nn.BatchNorm1d(12)
        self.c3 = nn.Conv1d(12, 6, 1)
        self.fc = nn.Linear(6 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.c2(x))) + x
        x = F.max_pool1d(self.c3(x), 2)
        return self.fc(x.reshape(x.shape[0], -1))


class FPNSeg(nn.Module):
    """ResNet-ish encoder + feature pyramid (lateral 1x1 convs summed top-down) + seg head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.c2 = nn.Sequential(cbr(3, 8, 3, 2), BasicBlock(8, 8))
        self.c3 = BasicBlock(8, 16, 2)
        self.c4 = BasicBlock(16, 24, 2)
        self.lat = nn.ModuleList([nn.Conv2d(c, 12, 1) for c in (8, 16, 24)])
        self.smooth = nn.ModuleList([cbr(12, 8) for _ in range(3)])
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        f2 = self.c2(x)
        f3 = self.c3(f2)
        f4 = self.c4(f3)
        p4 = self.lat[2](f4)
        p3 = self.lat[1](f3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        p2 = self.lat[0](f2) + F.interpolate(p3, size=f2.shape[-2:], mode="nearest")
        outs = [F.interpolate(s(p), size=f2.shape[-2:], mode="bilinear", align_corners=False)
                for s, p in zip(self.smooth, (p2, p3, p4))]
        y = sum(outs)
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


class PSPNet(nn.Module):
    """Pyramid pooling module: adaptive pools of several sizes, 1x1 conv, upsample, concat."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(cbr(3, 8, 3, 2), cbr(8, 16, 3, 2), cbr(16, 16))
        self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(16, 4, 1, bias=False),
                                                   nn.BatchNorm2d(4), nn.ReLU(inplace=True)) for s in (1, 2, 3, 6)])
        self.bottleneck = cbr(16 + 16, 16)
        self.cls = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        h, w = f.shape[2], f.shape[3]
        priors = [F.interpolate(st(f), size=(h, w), mode="bilinear", align_corners=True) for st in self.stages] + [f]
        y = self.cls(self.bottleneck(torch.cat(priors, 1)))
        return F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)


class ShuffleUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(cbr(h, h, 1), cbr(h, h, 3, g=h, act=nn.Identity), cbr(h, h, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        out = torch.cat((a, self.branch(b)), dim=1)
        n, c, hh, ww = out.shape
        return out.view(n, 2, c // 2, hh, ww).transpose(1, 2).contiguous().view(n, c, hh, ww)


class ShuffleNetLike(nn.Module):
    """ShuffleNetV2-style units: chunk, concat, channel shuffle (which blocks its channels)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 16, 3, 2)
        self.units = nn.Sequential(ShuffleUnit(16), ShuffleUnit(16))
        self.head = cbr(16, 24, 1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        return self.fc(self.head(self.units(self.stem(x))).mean([2, 3]))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-1 * torch.ones(c))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    """Channels-last LayerNorm (blocks the residual stream) around a prunable MLP."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.blocks = nn.Sequential(ConvNeXtBlock(16), ConvNeXtBlock(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((-2, -1)))


def _make_divisible(v: float, d: int = 4) -> int:
    return max(d, int(v + d / 2) // d * d)


class MobileNetV3Like(nn.Module):
    """Hardswish, squeeze-excite with hardsigmoid and rounded widths, Linear head with dropout."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 8, 3, 2, act=nn.Hardswish)
        self.expand = cbr(8, 24, 1, act=nn.Hardswish)
        self.dw = cbr(24, 24, 5, 2, g=24, act=nn.Hardswish)
        self.se1 = nn.Conv2d(24, _make_divisible(24 / 4), 1)
        self.se2 = nn.Conv2d(_make_divisible(24 / 4), 24, 1)
        self.project = nn.Sequential(nn.Conv2d(24, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.last = cbr(12, 32, 1, act=nn.Hardswish)
        self.classifier = nn.Sequential(nn.Linear(32, 40), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True),
                                        nn.Linear(40, classes))

    def forward(self, x):
        y = self.dw(self.expand(self.stem(x)))
        s = F.hardsigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))), inplace=True)
        y = self.last(self.project(y * s))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class InceptionLike(nn.Module):
    """Inception block: 1x1, 1x1->3x3, 1x1->5x5 and pool->1x1 branches concatenated; aux output in training."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 12, 3, 2)
        self.b1 = cbr(12, 6, 1)
        self.b3 = nn.Sequential(cbr(12, 4, 1), cbr(4, 6, 3))
        self.b5 = nn.Sequential(cbr(12, 2, 1), cbr(2, 4, 5))
        self.bp = cbr(12, 4, 1)
        self.aux = nn.Linear(12, classes)
        self.fc = nn.Linear(20, classes)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(F.avg_pool2d(x, 3, 1, 1))], 1)
        out = self.fc(F.dropout(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1), 0.2, self.training))
        if self.training:
            return out, self.aux(x.mean((2, 3)))
        return out


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "vgg": (VGG, (2, 3, 16, 16)),
    "resnet_basic": (lambda: ResNet(BasicBlock, (2, 2), (8, 16)), (2, 3, 32, 32)),
    "resnet_bottleneck": (lambda: ResNet(Bottleneck, (2, 2), (4, 8)), (2, 3, 32, 32)),
    "resnext": (lambda: ResNet(Bottleneck, (1, 1), (4, 8), groups=4, width_per_group=2), (2, 3, 32, 32)),
    "mobilenet_v2": (MobileNetV2, (2, 3, 32, 32)),
    "efficientnet_se": (EfficientNetLike, (2, 3, 32, 32)),
    "densenet": (DenseNet, (2, 3, 16, 16)),
    "unet": (UNet, (2, 3, 16, 16)),
    "segnet": (SegNet, (2, 3, 16, 16)),
    "deeplabv3plus": (DeepLabV3Plus, (2, 3, 32, 32)),
    "coverage": (Coverage, (2, 3, 8, 8)),
    "conv1d": (Conv1dNet, (2, 4, 16)),
    "fpn": (FPNSeg, (2, 3, 32, 32)),
    "pspnet": (PSPNet, (2, 3, 48, 48)),
    "shufflenet": (ShuffleNetLike, (2, 3, 16, 16)),
    "convnext": (ConvNeXtLike, (2, 3, 16, 16)),
    "mobilenet_v3": (MobileNetV3Like, (2, 3, 32, 32)),
    "inception": (InceptionLike, (2, 3, 16, 16)),
}
