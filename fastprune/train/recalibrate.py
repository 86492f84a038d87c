"""Batch-norm recalibration: after surgery the features a norm sees have moved; re-estimate its
running mean and variance from data (no gradient step, weights unchanged)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_batchnorm(model: nn.Module, data: Iterable[Any], max_batches: int | None = None) -> int:
    """Reset every batch norm's running statistics and re-estimate them as the exact average over
    `data` (batches of (image, ...) or images); returns the number of batches used. The model is
    left in eval mode; norms without running statistics are left alone."""
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    device = next(model.parameters()).device
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
        m.train()
    used = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(data):
                if max_batches is not None and i >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                used += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    if used == 0:
        raise ValueError("fastprune: batch-norm recalibration got no data")
    return used


__all__ = ["recalibrate_batchnorm"]
