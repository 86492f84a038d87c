"""A small hook-based multiply-accumulate counter for the model tests (conv, transposed conv,
linear; the convention of torchvision's published GFLOPS figures)."""
from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def conv(m: nn.Conv2d, inp, out) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def convt(m: nn.ConvTranspose2d, inp, out) -> None:
        nonlocal total
        total += inp[0].numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, inp, out) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(convt))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
