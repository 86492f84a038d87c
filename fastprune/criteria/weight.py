"""Weight criteria: filter norms (l1, l2) and FPGM (distance to the other filters)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Criterion, register
from .context import GroupContext


@register
class L1(Criterion):
    """Sum of |w| of each channel's producer filters."""
    name = "l1"

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return ctx.filters().abs().sum(1).numpy()


@register
class L2(Criterion):
    """Euclidean norm of each channel's producer filters."""
    name = "l2"

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return ctx.filters().norm(dim=1).numpy()


@register
class FPGM(Criterion):
    """He et al. 2019: filters close to the geometric median of the layer are replaceable;
    score = sum of Euclidean distances to all other filters (small = redundant)."""
    name = "fpgm"

    def scores(self, ctx: GroupContext) -> np.ndarray:
        f = ctx.filters()
        return torch.cdist(f, f).sum(1).numpy()
