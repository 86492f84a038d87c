"""Activation criteria from the moments of each group's feature map (and Taylor sums)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Criterion, register
from .context import GroupContext, as_numpy


class _Moment(Criterion):
    """A criterion that is one per-channel statistic of the group's moments."""
    needs = frozenset({"moments"})
    statistic = ""

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return as_numpy(getattr(ctx.moments(), self.statistic))


@register
class Mean(_Moment):
    """Mean activation of each channel."""
    name = statistic = "mean"


@register
class Std(_Moment):
    """Standard deviation of each channel over all pixels of all images."""
    name = statistic = "std"


@register
class MSD(_Moment):
    """Mean over images of each channel's spatial standard deviation."""
    name = statistic = "msd"


@register
class APoZ(Criterion):
    """Average percentage of zeros (Hu et al. 2016): the more zeros, the less important."""
    name = "apoz"
    needs = frozenset({"moments"})

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return 1.0 - as_numpy(ctx.moments().zero_fraction)

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        return {"apoz": as_numpy(ctx.moments().zero_fraction).tolist()}


@register
class Taylor(Criterion):
    """First-order Taylor (Molchanov et al. 2017): mean over images of |mean_p a*dL/da|.
    Collected only by `collect(..., loss=callable)` (an opt-in backward pass per batch)."""
    name = "taylor"
    needs = frozenset({"taylor"})

    def scores(self, ctx: GroupContext) -> np.ndarray:
        t = ctx.stats.taylor.get(ctx.gid)
        n = ctx.stats.taylor_count.get(ctx.gid, 0)
        if t is None or n == 0:
            raise ValueError("fastprune: 'taylor' needs gradients: collect the statistics with loss=callable(output, batch)")
        return as_numpy(t) / n


@dataclass(frozen=True)
class RandomOptions:
    seed: int = 0


@register
class Random(Criterion):
    """Uniform random scores (the baseline every criterion must beat), seeded per group."""
    name = "random"
    Options = RandomOptions

    def scores(self, ctx: GroupContext) -> np.ndarray:
        rng = np.random.default_rng([int(self.options.seed), _stable(ctx.gid)])
        return rng.random(ctx.channels)


def _stable(s: str) -> int:
    return sum((i + 1) * ord(ch) for i, ch in enumerate(s)) % (2**31)
