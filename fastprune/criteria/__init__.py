"""Per-channel importance criteria: typed, registered `Criterion` objects.

`get(name, **options)` returns a configured criterion, `names()` the registered names,
`register(cls)` adds a user's own. A criterion scores one channel group from a
`GroupContext` (statistics + weights), selects k channels, and, if it has one, gives its own
per-layer count as a function of a declared `Knob`. Each family lives in its own module:
weight (l1, l2, fpgm), activation (mean, std, apoz, msd, taylor, random), nci (nci, nci_w,
pca_nci, msd_nci), lfa, lasso, subset (subset, subset_cov).
"""
from __future__ import annotations

from . import activation, lasso, lfa, nci, subset, weight  # noqa: F401  (register the built-in criteria)
from .base import STATISTICS, Criterion, Knob, NoOptions, available, get, names, register, seeded, top_k
from .context import GroupContext

__all__ = ["STATISTICS", "Criterion", "GroupContext", "Knob", "NoOptions", "available", "get", "names",
           "register", "seeded", "top_k"]
