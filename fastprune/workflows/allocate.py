"""Per-layer counts by redundancy for a cost budget: the PCA count of every group's correlation
matrix at one explained-variance tau, tau found by bisection so that the removed fraction of
MACs (or parameters) reaches the target. Every method then selects within these counts, so
methods compare at the same allocation."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn

from ..criteria.linalg import correlation, explained_variance_ratio
from ..planning.cost import CostModel
from ..planning.rules import bound

_ITERATIONS = 40


def _cumulative(stats: Any, gid: str) -> np.ndarray:
    m = stats.moments.get(gid)
    if m is None or not stats.meta.get("covariance", True):
        raise ValueError("fastprune: an allocation by redundancy needs the covariance (collect with covariance=True)")
    return np.cumsum(explained_variance_ratio(correlation(m.cov)))


def redundancy_counts(model: nn.Module, stats: Any, target: float, which: str = "macs",
                      exclude: Sequence[str] = (), min_channels: int = 1,
                      example_inputs: Any = None) -> tuple[dict[str, int], float, float]:
    """({group id: kept channels}, tau, removed fraction) for the largest tau whose PCA counts
    remove at least `target` of the model's `which` ("macs" or "params"). Groups produced by a
    module in `exclude` keep everything. ValueError when even `min_channels` everywhere is short."""
    if which not in ("macs", "params"):
        raise ValueError(f"fastprune: which must be 'macs' or 'params', got {which!r}")
    if not 0 <= target < 1:
        raise ValueError(f"fastprune: the target is the fraction removed and must be in [0, 1), got {target!r}")
    if example_inputs is None:
        example_inputs = stats.example_inputs(model)
    cost = CostModel(model, example_inputs, stats)
    at = 1 if which == "macs" else 0
    base = cost.evaluate({})[at]
    gids = [gid for gid, g in stats.groups.items()
            if g.prunable and not any(p["module"] in exclude for p in g.producers)]
    cum = {gid: _cumulative(stats, gid) for gid in gids}

    def counts(tau: float) -> dict[str, int]:
        return {gid: bound(int(min(len(c), np.searchsorted(c, tau - 1e-12) + 1)), len(c), min_channels, 1)
                for gid, c in cum.items()}

    def removed(k: dict[str, int]) -> float:
        gone = {gid: set(range(k[gid], stats.group(gid).channels)) for gid in k}
        return 1.0 - cost.evaluate(gone)[at] / base

    floor = removed({gid: bound(1, stats.group(gid).channels, min_channels, 1) for gid in gids})
    if floor < target:
        raise ValueError(f"fastprune: cannot remove {target:.1%} of the {which}: with every layer at min_channels "
                         f"({min_channels}) {floor:.1%} goes at most")
    lo, hi = 0.0, 1.0  # removed(counts(lo)) >= target
    for _ in range(_ITERATIONS):
        mid = 0.5 * (lo + hi)
        if removed(counts(mid)) >= target:
            lo = mid
        else:
            hi = mid
    best = counts(lo) if lo > 0 else {gid: bound(1, stats.group(gid).channels, min_channels, 1) for gid in gids}
    return best, lo, removed(best)


def producer_counts(stats: Any, counts: dict[str, int]) -> dict[str, int]:
    """Group counts keyed by the group's first producer (names survive pruning, group ids do not)."""
    return {stats.group(gid).producers[0]["module"]: k for gid, k in counts.items()}


__all__ = ["producer_counts", "redundancy_counts"]
