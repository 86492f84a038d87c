"""Per-layer counts for a cost budget, so that every method of a workflow selects within the
same counts: `fastprune.planning`'s `Budget(allocation=...)` with the workflow's allocation
("redundancy": the PCA count of every group's correlation at one tau, tau searched until the
budget is met within a point; "marginal": greedy by explained variance per unit of cost;
"uniform": one ratio for all layers)."""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..planning import Bounds, Budget
from ..planning.planner import allocate

#: allocations a workflow can use (those that need no criterion scores)
WORKFLOW_ALLOCATIONS = ("redundancy", "marginal", "uniform")


def check_allocation(allocation: str) -> str:
    if allocation not in WORKFLOW_ALLOCATIONS:
        raise ValueError(f"fastprune: allocation must be one of {', '.join(WORKFLOW_ALLOCATIONS)}, got {allocation!r}")
    return allocation


def budget_counts(model: nn.Module, stats: Any, target: float, which: str = "macs", allocation: str = "redundancy",
                  exclude: Sequence[str] = (), min_channels: int = 1,
                  example_inputs: Any = None) -> tuple[dict[str, int], dict[str, Any]]:
    """({group id: kept channels}, what the search recorded: "allocation", "reached" (the removed
    fraction of the model's `which`, "macs" or "params") and, for "redundancy", "knob" (tau)).
    Groups produced by a module in `exclude` keep everything. ValueError when even
    `min_channels` everywhere is short."""
    if which not in ("macs", "params"):
        raise ValueError(f"fastprune: which must be 'macs' or 'params', got {which!r}")
    a = allocate(model, stats, "random", Budget(**{which: target}, allocation=check_allocation(allocation)),
                 bounds=Bounds(int(min_channels), 1, tuple(exclude)), example_inputs=example_inputs, check=False)
    return a.counts, dict(a.search)


def producer_counts(stats: Any, counts: dict[str, int]) -> dict[str, int]:
    """Group counts keyed by the group's first producer (names survive pruning, group ids do not)."""
    return {stats.group(gid).producers[0].module: k for gid, k in counts.items()}


__all__ = ["WORKFLOW_ALLOCATIONS", "budget_counts", "check_allocation", "producer_counts"]
