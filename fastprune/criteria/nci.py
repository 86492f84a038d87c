"""Next-convolution influence criteria: nci, nci_w, pca_nci, msd_nci."""
from __future__ import annotations

import numpy as np

from .context import GroupContext, Scored, as_numpy
from .linalg import components_for_variance, correlation


def _dense_energy(ctx: GroupContext, consumer: dict) -> np.ndarray:
    """Energy of channel c through a consumer without spatial overlap between the positions
    it reads: a linear layer, or a transposed conv with stride >= kernel (the U-Net 2x2/2
    up-convolution): sum_p a_c(p)^2 * ||W_c||^2, from the moments (the primary consumer's)."""
    import torch
    mod = ctx.module(consumer["module"])
    w = mod.weight.detach().to(torch.float64).cpu()
    idx = torch.tensor(consumer["indices"])
    if isinstance(mod, torch.nn.Linear):
        wn = w.index_select(1, idx).square().sum(0)
    elif isinstance(mod, torch.nn.modules.conv._ConvTransposeNd):
        if mod.groups != 1 or any(s < (k - 1) * d + 1 for s, k, d in zip(mod.stride, mod.kernel_size, mod.dilation)):
            raise ValueError(f"fastprune: NCI through '{consumer['module']}' needs stride >= kernel "
                             "(overlapping transposed convolutions are not supported)")
        wn = w.index_select(0, idx).flatten(1).square().sum(1)
    else:
        raise ValueError(f"fastprune: no next-layer influence for consumer '{consumer['module']}' ({consumer['kind']})")
    m = ctx.moments()
    n = as_numpy(m.count)
    sq = as_numpy(m.var) * (n - 1) + n * as_numpy(m.mean) ** 2  # sum of squares per channel
    return sq * as_numpy(wn)


def _influence(ctx: GroupContext) -> np.ndarray:
    """I_c = sum over consumers of E||conv(A_c, W_next[:, c])||^2 (exact, from R_c(delta), for
    convolutions; from the moments for linear layers and non-overlapping up-convolutions)."""
    accs = ctx.stats.influence.get(ctx.gid, {})
    total = np.zeros(ctx.channels)
    found = False
    for c in ctx.group.consumers:
        if c["module"] in accs:
            w, groups = ctx.consumer_weight(c)
            total += as_numpy(accs[c["module"]].influence(w, groups))
            found = True
        elif c["kind"] in ("linear", "conv_transpose"):
            total += _dense_energy(ctx, c)
            found = True
    if not found:
        raise ValueError(f"fastprune: group {ctx.gid} has no next-layer statistics "
                         "(collect with influence=True; its consumers must be convolutions or linear layers)")
    return total


def nci(ctx: GroupContext) -> Scored:
    return Scored(_influence(ctx))


def nci_w(ctx: GroupContext) -> Scored:
    """Weight-only variant: sum over consumers of sum |W_next[:, c]|."""
    from fastprune.stats.influence import nci_w as _nci_w
    total = np.zeros(ctx.channels)
    found = False
    import torch
    for c in ctx.group.consumers:
        mod = ctx.module(c["module"])
        idx = torch.tensor(c["indices"])
        if c["kind"] in ("conv", "depthwise"):
            w, groups = ctx.consumer_weight(c)
            total += as_numpy(_nci_w(w, groups))
        elif isinstance(mod, torch.nn.Linear):
            total += as_numpy(mod.weight.detach().index_select(1, idx).abs().sum(0))
        elif isinstance(mod, torch.nn.modules.conv._ConvTransposeNd) and mod.groups == 1:
            total += as_numpy(mod.weight.detach().index_select(0, idx).flatten(1).abs().sum(1))
        else:
            continue
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
