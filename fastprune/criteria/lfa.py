"""LFA1-1 as a criterion: factor analysis of the group's correlation matrix picks one filter
per factor; the report carries Bartlett's sphericity, KMO and communalities."""
from __future__ import annotations

import numpy as np

from .context import GroupContext, Scored, as_numpy
from .factor import lfa as _lfa


def lfa(ctx: GroupContext) -> Scored:
    """Options: `k` (factor count, set by count rules such as ratio=), else `factors`
    ('kaiser' default, 'variance' with `variance`=tau, 'se_scree')."""
    m = ctx.moments()
    n = float(m.images) if m.images else float(np.ravel(as_numpy(m.count))[0])
    res = _lfa(ctx.covariance(), k=ctx.options.get("k"), rule=ctx.options.get("factors") or "kaiser",
               tau=ctx.options.get("variance"), n_samples=n)
    chi2, pval, dof = res.bartlett
    # score: the chosen filters first (by factor strength order kept), then by |loading|
    scores = res.scores.copy()
    scores[res.keep] += scores.max(initial=0.0) + 1.0
    return Scored(scores, keep=res.keep, info={
        "factors": len(res.keep), "bartlett_chi2": _finite(chi2), "bartlett_p": _finite(pval), "bartlett_dof": dof,
        "bartlett_n": n, "bartlett_n_from": "images" if m.images else "samples",
        "kmo": _finite(res.kmo), "communalities": res.communalities.tolist()})


def _finite(v: float) -> float | None:
    """None for a statistic that is not finite (Bartlett's chi2 of exactly collinear channels;
    Bartlett's test with too few images)."""
    return float(v) if np.isfinite(v) else None
