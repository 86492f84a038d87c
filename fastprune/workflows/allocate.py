"""Per-layer counts by redundancy for a cost budget, so that every method of a workflow selects
within the same counts: `fastprune.planning`'s `Budget(allocation="redundancy")` (the PCA count
of every group's correlation at one tau, tau searched until the budget is met within a point)."""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..planning import Bounds, Budget
from ..planning.planner import allocate


def redundancy_counts(model: nn.Module, stats: Any, target: float, which: str = "macs",
                      exclude: Sequence[str] = (), min_channels: int = 1,
                      example_inputs: Any = None) -> tuple[dict[str, int], float, float]:
    """({group id: kept channels}, tau, removed fraction of the model's `which` ("macs" or
    "params")). Groups produced by a module in `exclude` keep everything. ValueError when even
    `min_channels` everywhere is short."""
    if which not in ("macs", "params"):
        raise ValueError(f"fastprune: which must be 'macs' or 'params', got {which!r}")
    a = allocate(model, stats, "random", Budget(**{which: target}, allocation="redundancy"),
                 bounds=Bounds(int(min_channels), 1, tuple(exclude)), example_inputs=example_inputs, check=False)
    tau = a.search.get("knob", {}).get("value", 1.0)
    return a.counts, float(tau), float(a.search["reached"])


def producer_counts(stats: Any, counts: dict[str, int]) -> dict[str, int]:
    """Group counts keyed by the group's first producer (names survive pruning, group ids do not)."""
    return {stats.group(gid).producers[0].module: k for gid, k in counts.items()}


__all__ = ["producer_counts", "redundancy_counts"]
