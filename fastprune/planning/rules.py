"""Keep-count rules: per layer (variance, ratio, the criterion's own cut-off), min_channels,
round_to, and the global threshold search for MAC / parameter targets."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def check_fraction(name: str, r: float) -> float:
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= float(r) < 1.0:
        raise ValueError(f"fastprune: {name} is the fraction removed and must be in [0, 1), got {r!r}")
    return float(r)


def bound(k: int, channels: int, min_channels: int, round_to: int) -> int:
    """Apply min_channels and round_to (kept count rounded up to a multiple, at most all)."""
    k = max(int(k), int(min_channels), 1)
    if round_to > 1:
        k = int(math.ceil(k / round_to) * round_to)
    return min(k, channels)


def ratio_count(channels: int, ratio: float) -> int:
    """Channels kept when `ratio` of them is removed (Torch-Pruning: int(C * ratio) removed)."""
    return channels - int(channels * ratio)


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores (ties: lower index first), sorted."""
    order = np.argsort(-scores, kind="stable")
    return sorted(int(i) for i in order[:k])


def normalised(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their mean magnitude, so layers compare on one global scale."""
    m = float(np.mean(np.abs(scores)))
    return scores / m if m > 0 else np.zeros_like(scores)


def global_threshold(
    scores: dict[str, np.ndarray],
    cost: Callable[[dict[str, set[int]]], float],
    target: float,
    min_channels: int,
    round_to: int,
) -> dict[str, list[int]]:
    """Kept channels per group for the global threshold on normalised scores whose removed
    fraction of `cost` is closest to `target` (bisection over the sorted scores)."""
    norm = {g: normalised(s) for g, s in scores.items()}
    base = cost({})
    if base <= 0:
        raise ValueError("fastprune: the model has no cost to reduce")
    thresholds = np.unique(np.concatenate([v for v in norm.values()] + [np.array([-np.inf])]))

    def keep_at(t: float) -> dict[str, list[int]]:
        out = {}
        for g, s in norm.items():
            k = bound(int(np.sum(s > t)), len(s), min_channels, round_to)
            out[g] = top_k(scores[g], k)
        return out

    def removed_fraction(keep: dict[str, list[int]]) -> float:
        removed = {g: set(range(len(scores[g]))) - set(k) for g, k in keep.items()}
        return 1.0 - cost(removed) / base

    lo, hi = 0, len(thresholds) - 1  # fraction(thresholds[lo]) <= target side
    if removed_fraction(keep_at(thresholds[hi])) < target:
        raise ValueError(f"fastprune: cannot remove {target:.1%} even when every group keeps min_channels "
                         f"({removed_fraction(keep_at(thresholds[hi])):.1%} at most)")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if removed_fraction(keep_at(thresholds[mid])) >= target:
            hi = mid
        else:
            lo = mid
    a, b = keep_at(thresholds[lo]), keep_at(thresholds[hi])
    return a if abs(removed_fraction(a) - target) < abs(removed_fraction(b) - target) else b
