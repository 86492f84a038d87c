"""Next-convolution influence criteria: nci, nci_w, pca_nci, msd_nci."""
from __future__ import annotations

import numpy as np

from .context import GroupContext, Scored, as_numpy
from .linalg import components_for_variance, correlation


def _influence(ctx: GroupContext) -> np.ndarray:
    """I_c = sum over consuming convs of E||conv(A_c, W_next[:, c])||^2 (exact, from R_c(delta))."""
    accs = ctx.stats.influence.get(ctx.gid, {})
    if not accs:
        raise ValueError(f"fastprune: group {ctx.gid} has no next-convolution statistics "
                         "(collect with influence=True; its consumers must be 2-D convolutions)")
    total = np.zeros(ctx.channels)
    by_name = {c["module"]: c for c in ctx.group.consumers}
    for cname, acc in accs.items():
        w, groups = ctx.consumer_weight(by_name[cname])
        total += as_numpy(acc.influence(w, groups))
    return total


def nci(ctx: GroupContext) -> Scored:
    return Scored(_influence(ctx))


def nci_w(ctx: GroupContext) -> Scored:
    """Weight-only variant: sum over consumers of sum |W_next[:, c]|."""
    from fastprune.stats.influence import nci_w as _nci_w
    total = np.zeros(ctx.channels)
    found = False
    for c in ctx.group.consumers:
        if c["kind"] not in ("conv", "depthwise"):
            continue
        w, groups = ctx.consumer_weight(c)
        total += as_numpy(_nci_w(w, groups))
        found = True
    if not found:
        raise ValueError(f"fastprune: group {ctx.gid} has no consuming convolution for nci_w")
    return Scored(total)


def pca_nci(ctx: GroupContext) -> Scored:
    """NCI decides which channels; PCA of the correlation matrix (fewest components reaching
    explained variance tau, option `variance`, default 0.95) decides how many."""
    tau = ctx.options.get("variance") or 0.95
    s = _influence(ctx)
    k = components_for_variance(correlation(ctx.covariance()), float(tau))
    keep = sorted(np.argsort(-s, kind="stable")[:k].tolist())
    return Scored(s, keep=keep, info={"pca_components": k, "variance_tau": float(tau)})


def _normalise(x: np.ndarray) -> np.ndarray:
    m = float(np.mean(np.abs(x)))
    return x / m if m > 0 else np.zeros_like(x)


def msd_nci(ctx: GroupContext) -> Scored:
    """Mean-normalised NCI plus mean-normalised MSD; the low tail of this score's distribution
    in the layer is pruned (below mean - alpha*std, option `alpha` default 1, or below the
    `percentile`-th percentile)."""
    s = 0.5 * (_normalise(_influence(ctx)) + _normalise(as_numpy(ctx.moments().msd)))
    alpha = ctx.options.get("alpha")
    pct = ctx.options.get("percentile")
    if alpha is not None and pct is not None:
        raise ValueError("fastprune: give msd_nci either alpha= or percentile=, not both")
    if pct is not None:
        if not 0 <= pct <= 100:
            raise ValueError(f"fastprune: percentile must be in [0, 100], got {pct}")
        cut = float(np.percentile(s, pct))
        rule = {"percentile": float(pct)}
    else:
        a = 1.0 if alpha is None else float(alpha)
        cut = float(s.mean() - a * s.std())
        rule = {"alpha": a}
    keep = [int(i) for i in np.flatnonzero(s >= cut)]
    return Scored(s, keep=keep, info={"cutoff": cut, **rule})


__all__ = ["nci", "nci_w", "pca_nci", "msd_nci"]
