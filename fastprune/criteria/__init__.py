"""Per-channel importance criteria, by name, from `Statistics` and the model's weights.

`score(method, model, stats, group_id, **options) -> Scored` (scores: higher = keep).
Each family lives in its own module: weight (l1, l2, fpgm), activation (mean, std, apoz,
msd, taylor, random), nci (nci, nci_w, pca_nci, msd_nci), lfa, lasso, subset (subset, subset_cov).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .context import GroupContext, Scored

CriterionFn = Callable[[GroupContext], Scored]


def _registry() -> dict[str, CriterionFn]:
    from . import activation, lasso, lfa, nci, subset, weight
    return {
        "l1": weight.l1, "l2": weight.l2, "fpgm": weight.fpgm,
        "random": activation.random, "mean": activation.mean, "std": activation.std,
        "apoz": activation.apoz, "msd": activation.msd, "taylor": activation.taylor,
        "nci": nci.nci, "nci_w": nci.nci_w, "pca_nci": nci.pca_nci, "msd_nci": nci.msd_nci,
        "lfa": lfa.lfa, "lasso": lasso.lasso, "subset": subset.subset, "subset_cov": subset.subset_cov,
    }


METHODS = ("l1", "l2", "fpgm", "random", "mean", "std", "apoz", "msd", "taylor",
           "nci", "nci_w", "pca_nci", "msd_nci", "lfa", "lasso", "subset", "subset_cov")


SEEDED = ("random",)  # criteria whose selection depends on the `seed` option


def score(method: str, model: Any, stats: Any, gid: str, **options: Any) -> Scored:
    """Score the channels of group `gid` by criterion `method`."""
    reg = _registry()
    if method not in reg:
        raise ValueError(f"fastprune: unknown criterion {method!r}; choose one of {', '.join(METHODS)}")
    out = reg[method](GroupContext(model, stats, str(gid), options))
    s = np.asarray(out.scores, dtype=np.float64)
    if s.shape != (stats.group(gid).channels,):
        raise RuntimeError(f"fastprune: criterion {method} gave {s.shape} scores for {stats.group(gid).channels} channels")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"fastprune: criterion {method} gave non-finite scores for group {gid}")
    out.scores = s
    return out


__all__ = ["METHODS", "SEEDED", "Scored", "GroupContext", "score"]
