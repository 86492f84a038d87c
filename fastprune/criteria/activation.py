"""Activation criteria from the moments of each group's feature map (and Taylor sums)."""
from __future__ import annotations

import numpy as np

from .context import GroupContext, Scored, as_numpy


def mean(ctx: GroupContext) -> Scored:
    return Scored(as_numpy(ctx.moments().mean))


def std(ctx: GroupContext) -> Scored:
    return Scored(as_numpy(ctx.moments().std))


def apoz(ctx: GroupContext) -> Scored:
    """Average percentage of zeros (Hu et al. 2016): the more zeros, the less important."""
    z = as_numpy(ctx.moments().zero_fraction)
    return Scored(1.0 - z, info={"apoz": z.tolist()})


def msd(ctx: GroupContext) -> Scored:
    """Mean over images of each channel's spatial standard deviation."""
    return Scored(as_numpy(ctx.moments().msd))


def taylor(ctx: GroupContext) -> Scored:
    """First-order Taylor (Molchanov et al. 2017): mean over images of |mean_p a*dL/da|.
    Collected only by `collect(..., loss=callable)` (an opt-in backward pass per batch)."""
    t = ctx.stats.taylor.get(ctx.gid)
    n = ctx.stats.taylor_count.get(ctx.gid, 0)
    if t is None or n == 0:
        raise ValueError("fastprune: 'taylor' needs gradients: collect the statistics with loss=callable(output, batch)")
    return Scored(as_numpy(t) / n)


def random(ctx: GroupContext) -> Scored:
    """Uniform random scores (the baseline every criterion must beat), seeded per group."""
    seed = int(ctx.options.get("seed", 0))
    rng = np.random.default_rng([seed, _stable(ctx.gid)])
    return Scored(rng.random(ctx.channels))


def _stable(s: str) -> int:
    return sum((i + 1) * ord(ch) for i, ch in enumerate(s)) % (2**31)
