"""`plan(model, stats, criterion, rule)`: from saved statistics to a `Plan`, no data needed.

The rule (`rules.py`) and the criterion decide each group's count in one place
(`counts.counts_for`); the criterion then selects that many channels (`criterion.select`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fastprune._documents import weights_digest
from fastprune.criteria import Criterion, GroupContext, get
from fastprune.criteria.linalg import retained_variance
from fastprune.graph.cost import ChannelCost
from fastprune.stats.statistics import Statistics

from .counts import counts_for
from .plan import Plan
from .rules import Bounds, Budget, Own


@dataclass
class Allocation:
    """What `allocate` decided: the kept count per group, what the search recorded, and the
    objects `plan` goes on with."""
    counts: dict[str, int]
    search: dict[str, Any]
    criterion: Criterion
    rule: Any
    contexts: dict[str, GroupContext]
    cost: ChannelCost


def allocate(model: torch.nn.Module, stats: Statistics, criterion: str | Criterion = "l1", rule: Any = None, *,
             bounds: Bounds = Bounds(), example_inputs: Any = None, check: bool = True) -> Allocation:
    """How many channels each group keeps under `rule` (the counts `plan` then selects)."""
    crit = get(criterion)
    rule = Own() if rule is None else rule
    if isinstance(rule, Own) and not crit.own_count:
        raise ValueError(f"fastprune: criterion {crit.name!r} needs a rule: Variance, Ratio, Budget or Tolerance "
                         "(variance=, ratio=, target_macs=, target_params= or tolerance=)")
    stats.check_complete()
    crit.check(stats)
    if example_inputs is None:
        example_inputs = stats.example_inputs(model)
    if check:
        stats.check_model(model, example_inputs)
    producers_all = {p.module for g in stats.groups.values() for p in g.producers}
    bad = [e for e in bounds.exclude if e not in producers_all]
    if bad:
        raise ValueError(f"fastprune: exclude names no producer of a prunable group: {bad}")
    modules = dict(model.named_modules())
    contexts = {gid: GroupContext(model, stats, gid, modules) for gid, g in stats.groups.items()
                if g.prunable and not any(p.module in bounds.exclude for p in g.producers)}
    cost = ChannelCost(model, example_inputs, {gid: g.members for gid, g in stats.groups.items()})
    which = 1 if isinstance(rule, Budget) and rule.resource == "macs" else 0
    base = (cost.base_params, cost.base_macs)[which]

    def removed(counts: dict[str, int]) -> float:
        lost = {gid: contexts[gid].channels - k for gid, k in counts.items()}
        return 1.0 - cost.evaluate(lost)[which] / base if base else 0.0

    counts, search = counts_for(rule, crit, contexts, bounds, removed, lambda keep: _removal(model, stats, keep))
    return Allocation(counts, search, crit, rule, contexts, cost)


def plan(model: torch.nn.Module, stats: Statistics, criterion: str | Criterion = "l1", rule: Any = None, *,
         bounds: Bounds = Bounds(), example_inputs: Any = None, check: bool = True) -> Plan:
    """Which output channels each producer keeps: `criterion` (a registered name or a
    `Criterion`) scores and selects, `rule` (`Variance`, `Ratio`, `Budget`, `Tolerance`, or
    None/`Own()`: the criterion's own count) decides how many, `bounds` bound every count."""
    digest = weights_digest(model)  # of the weights planned on
    a = allocate(model, stats, criterion, rule, bounds=bounds, example_inputs=example_inputs, check=check)
    keep = {}
    for gid, ctx in a.contexts.items():
        sel = sorted(int(i) for i in a.criterion.select(ctx, a.counts[gid]))
        if len(sel) != a.counts[gid] or len(set(sel)) != len(sel) or (sel and not 0 <= sel[0] <= sel[-1] < ctx.channels):
            raise RuntimeError(f"fastprune: criterion {a.criterion.name} selected {len(sel)} channels of group {gid}, "
                               f"asked for {a.counts[gid]}")
        keep[gid] = sel
    p = _assemble(model, stats, a.criterion, a.rule, bounds, a.contexts, keep, a.cost, a.search)
    p.meta["weights_digest"] = digest
    return p


def _producer_channels(model: torch.nn.Module, name: str) -> int:
    mod = dict(model.named_modules())[name]
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(mod, attr):
            return int(getattr(mod, attr))
    raise ValueError(f"fastprune: cannot tell how many output channels '{name}' has")


def _producer_keep(model, stats, keep: dict[str, list[int]]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Group-index selections -> each producer's kept output-channel indices."""
    removed: dict[str, set[int]] = {}
    channels: dict[str, int] = {}
    for gid, k in keep.items():
        g = stats.group(gid)
        ks = set(k)
        for p in g.producers:
            channels[p.module] = _producer_channels(model, p.module)
            removed.setdefault(p.module, set()).update(
                q for i in range(g.channels) if i not in ks for q in p.positions(i))
    return {n: [i for i in range(channels[n]) if i not in removed[n]] for n in channels}, channels


def _removal(model, stats, keep) -> dict[str, list[int]]:
    kept, channels = _producer_keep(model, stats, keep)
    return {n: [i for i in range(channels[n]) if i not in set(k)] for n, k in kept.items()
            if len(k) < channels[n]}


def _assemble(model, stats, crit, rule, bounds, contexts, keep, cost, search) -> Plan:
    removed = {gid: ctx.channels - len(keep[gid]) for gid, ctx in contexts.items()}
    params_after, macs_after = cost.evaluate(removed)
    layers: dict[str, dict[str, Any]] = {}
    for gid, ctx in contexts.items():
        k = keep[gid]
        names = [p.module for p in ctx.group.producers]
        lp = lm = 0
        for n in names:
            p, m = cost.layer(n, removed)
            lp, lm = lp + p, lm + m
        rec = {"group": gid, "producers": names, "channels": ctx.channels, "kept": len(k), "keep": list(k),
               "scores": [float(x) for x in ctx.scores(crit)], "params": int(lp), "macs": int(lm)}
        if stats.meta.get("covariance", True) and gid in stats.moments:
            rec["retained_variance"] = retained_variance(ctx.covariance(), k)
        rec.update({f"criterion_{a}": b for a, b in crit.info(ctx, k).items()})
        layers[names[0] if names else gid] = rec
    prod_keep, channels = _producer_keep(model, stats, keep)
    meta = {"method": crit.name, "rule": rule.describe(), "options": crit.describe(),
            "min_channels": bounds.min_channels, "round_to": bounds.round_to, "fingerprint": stats.fingerprint,
            "params_before": int(cost.base_params), "params_after": int(params_after),
            "macs_before": int(cost.base_macs), "macs_after": int(macs_after),
            "params_removed": 1 - params_after / cost.base_params if cost.base_params else 0.0,
            "macs_removed": 1 - macs_after / cost.base_macs if cost.base_macs else 0.0,
            "macs_unit": "multiply-accumulates", **search}
    return Plan(keep=prod_keep, channels=channels, layers=layers, meta=meta)
