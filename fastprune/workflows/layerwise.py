"""Layer-by-layer pruning with reconstruction: one channel group at a time, in forward order,
each selected and reconstructed on statistics re-collected from the already-pruned network, so
the errors of earlier layers are seen (and compensated) by the later ones."""
from __future__ import annotations

import copy

from typing import Any, Iterable

import numpy as np
from torch import nn

from ..criteria import score
from ..planning.plan import Plan
from ..planning.rules import top_k
from ..stats.collect import collect
from ..surgery import prune
from ..surgery.reconstruct import prune_reconstructed
from ..train.recalibrate import recalibrate_batchnorm


def group_plan(model: nn.Module, stats: Any, gid: str, keep: list[int]) -> Plan:
    """A plan that keeps the group-local channels `keep` of group `gid` and touches nothing else."""
    g = stats.group(gid)
    kept = set(keep)
    keeps: dict[str, list[int]] = {}
    channels: dict[str, int] = {}
    modules = dict(model.named_modules())
    for p in g.producers:
        mod = modules[p["module"]]
        n = int(next(getattr(mod, a) for a in ("out_channels", "out_features", "num_features") if hasattr(mod, a)))
        channels[p["module"]] = n
        gone = {p["indices"][i] for i in range(g.channels) if i not in kept}
        keeps[p["module"]] = [i for i in range(n) if i not in gone]
    return Plan(keep=keeps, channels=channels, meta={"group": gid, "kept": len(keep)})


def counts_of(plan: Plan) -> dict[str, int]:
    """How many output channels each producer keeps under `plan`."""
    return {name: len(k) for name, k in plan.keep.items()}


def needs_patch_gram(method: str, reconstruct: str | None) -> bool:
    """Whether layer-by-layer pruning with this selection and reconstruction reads the patch Gram."""
    return reconstruct == "refit" or method in ("subset", "lasso")


def prune_layerwise(model: nn.Module, data: Iterable[Any], counts: dict[str, int], method: str = "subset",
                    reconstruct: str | None = "refit", stats_batches: int | None = 8, recalibrate: bool = True,
                    options: dict[str, Any] | None = None, plans: list[Plan] | None = None,
                    stats: Any = None) -> nn.Module:
    """Prune `model` to `counts` ({producer: kept output channels}) one group at a time.

    For each group (forward order) statistics of the current model are collected from `data`
    (re-iterable batches), `method` selects the channels to keep on them, the group is removed
    and, with `reconstruct` ("refit" or "fold"), its consumers are reconstructed. Batch norms are
    recalibrated at the end when `recalibrate`. Returns the pruned model (the input is untouched);
    each group's plan (relative to the model it was applied to) is appended to `plans`. `stats`:
    statistics of `model` already collected (with the patch Gram when `needs_patch_gram`).
    """
    need_gram = needs_patch_gram(method, reconstruct)
    current = model
    if stats is None:
        stats = collect(current, data, max_batches=stats_batches, patch_gram=need_gram, progress=False)
    todo = [g.producers[0]["module"] for g in stats.groups.values()
            if g.prunable and int(counts.get(g.producers[0]["module"], g.channels)) < g.channels]
    for n, producer in enumerate(todo):
        if n:  # statistics of the network pruned so far
            stats = collect(current, data, max_batches=stats_batches, patch_gram=need_gram, progress=False)
        gid = stats.group_of(producer)
        g = stats.group(gid)
        k = int(counts[producer])
        if k >= g.channels:
            continue
        scored = score(method, current, stats, gid, **(options or {}))
        keep = top_k(np.asarray(scored.scores), k)
        plan = group_plan(current, stats, gid, keep)
        example = stats.example_inputs(current)
        if reconstruct:
            current = prune_reconstructed(current, plan, stats, example, mode=reconstruct)
        else:
            current = prune(current, plan, example)
        if plans is not None:
            plans.append(plan)
    if current is model:
        current = copy.deepcopy(model)
    if recalibrate:
        recalibrate_batchnorm(current, data, stats_batches)
    return current
