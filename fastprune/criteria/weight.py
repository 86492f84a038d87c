"""Weight criteria: filter norms (l1, l2) and FPGM (distance to the other filters)."""
from __future__ import annotations

import torch

from .context import GroupContext, Scored


def l1(ctx: GroupContext) -> Scored:
    return Scored(ctx.filters().abs().sum(1).numpy())


def l2(ctx: GroupContext) -> Scored:
    return Scored(ctx.filters().norm(dim=1).numpy())


def fpgm(ctx: GroupContext) -> Scored:
    """He et al. 2019: filters close to the geometric median of the layer are replaceable;
    score = sum of Euclidean distances to all other filters (small = redundant)."""
    f = ctx.filters()
    return Scored(torch.cdist(f, f).sum(1).numpy())
