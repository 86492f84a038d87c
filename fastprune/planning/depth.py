"""Layer (depth) pruning as a planning step for U-Net-like models: how many of the deepest
levels (encoder block, matching decoder block and up-convolution) to remove, from the PCA
redundancy of each level's layers in the statistics.

A layer's redundancy is 1 - k/C, k the fewest principal components of its channel correlation
reaching explained variance tau (the same count as `Variance(tau)`); a level's is the
channel-weighted mean over its layers. Levels are removed from the deepest while their
redundancy reaches `threshold`. The model side (which layers form a level, how a level is
removed) belongs to the model: `fastprune.models.unet.level_layers` / `remove_levels`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fastprune.criteria import GroupContext
from fastprune.criteria.nci import pca_count
from fastprune.stats.statistics import Statistics


def level_redundancy(model: torch.nn.Module, stats: Statistics, levels: Mapping[int, Sequence[str]],
                     tau: float = 0.95) -> dict[int, float]:
    """Channel-weighted redundancy per level (levels without a layer in the statistics left out)."""
    modules = dict(model.named_modules())
    out: dict[int, float] = {}
    for level, names in levels.items():
        total = weight = 0.0
        for name in names:
            try:
                gid = stats.group_of(name)
            except KeyError:
                continue
            ctx = GroupContext(model, stats, gid, modules)
            total += (1.0 - pca_count(ctx, tau) / ctx.channels) * ctx.channels
            weight += ctx.channels
        if weight:
            out[int(level)] = total / weight
    return out


def levels_to_remove(model: torch.nn.Module, stats: Statistics, levels: Mapping[int, Sequence[str]],
                     threshold: float = 0.75, tau: float = 0.95, min_depth: int = 1) -> tuple[int, dict[int, float]]:
    """(number of deepest levels to remove, redundancy per level): count down from the deepest
    level while its redundancy reaches `threshold`, keeping at least `min_depth` levels."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"fastprune: the level threshold must be in [0, 1], got {threshold}")
    if not 0 < tau <= 1:
        raise ValueError(f"fastprune: variance (tau) must be in (0, 1], got {tau}")
    scores = level_redundancy(model, stats, levels, tau)
    n = 0
    for d in sorted(levels, reverse=True):
        if len(levels) - n <= min_depth or scores.get(d, -1.0) < threshold:
            break
        n += 1
    return n, scores
