"""The one place that turns a rule and a criterion into a kept-channel count per group.

Counts only: which channels are kept is then `criterion.select(ctx, k)` (planner.py). Budgets
search one scalar (the criterion's knob, a global score threshold, one ratio, or PCA's tau)
by bisection, then step layer by layer between the two bracketing count vectors, and keep the
counts whose removed fraction is closest to the target; where layers are so coarse that this
misses the target by more than a point, single channels move where that helps most.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable

import numpy as np

from fastprune.criteria import Criterion, GroupContext
from fastprune.criteria.nci import pca_count, pca_spectrum

from .rules import Bounds, Budget, Own, Ratio, Variance
from .tolerance import Tolerance, largest_within

Counts = dict[str, int]
_CLOSE = 0.01  # a budget lands within this of its target wherever single channels allow
#: removed fraction of the budget's resource for given counts
Removed = Callable[[Counts], float]


def counts_for(rule: Any, criterion: Criterion, contexts: dict[str, GroupContext], bounds: Bounds,
               removed: Removed | None = None, removal: Callable[[dict[str, list[int]]], Any] | None = None
               ) -> tuple[Counts, dict[str, Any]]:
    """Per-group kept counts under `rule`, and what the search recorded (for the plan's meta).
    `removed(counts)` (budgets) gives the removed fraction of the budget's resource;
    `removal(keep)` (tolerance) turns kept group channels into a producer removal."""
    def each(k_of: Callable[[GroupContext], int]) -> Counts:
        return {gid: bounds.bound(k_of(ctx), ctx.channels) for gid, ctx in contexts.items()}

    if isinstance(rule, Own):
        return each(lambda ctx: criterion.count(ctx, rule.value)), {}
    if isinstance(rule, Variance):
        return each(lambda ctx: pca_count(ctx, rule.tau, rule.basis)), {}
    if isinstance(rule, Ratio):
        return each(lambda ctx: rule.count(ctx.channels)), {}
    if isinstance(rule, Budget):
        return _budget(rule, criterion, contexts, bounds, removed)
    if isinstance(rule, Tolerance):
        return _tolerance(rule, criterion, contexts, bounds, removal)
    raise TypeError(f"fastprune: unknown rule {rule!r} (Variance, Ratio, Budget, Tolerance or Own)")


def allocation_of(rule: Budget, criterion: Criterion) -> str:
    alloc = rule.allocation or ("own" if criterion.own_count else "global")
    if alloc == "own" and not criterion.own_count:
        raise ValueError(f"fastprune: criterion {criterion.name!r} has no per-layer count of its own: "
                         "use allocation='global', 'uniform' or 'redundancy'")
    return alloc


def _normalised(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their mean magnitude, so layers compare on one global scale."""
    m = float(np.mean(np.abs(scores)))
    return scores / m if m > 0 else np.zeros_like(scores)


def _budget(rule: Budget, criterion: Criterion, contexts: dict[str, GroupContext], bounds: Bounds,
            removed: Removed | None) -> tuple[Counts, dict[str, Any]]:
    if removed is None:
        raise ValueError("fastprune: a Budget needs the cost model")
    alloc = allocation_of(rule, criterion)
    target = rule.target
    floor = {gid: bounds.bound(0, ctx.channels) for gid, ctx in contexts.items()}
    most = removed(floor)
    if most < target:
        raise ValueError(f"fastprune: cannot remove {target:.1%} of the {rule.resource}: even with every layer at "
                         f"min_channels={bounds.min_channels} only {most:.1%} go")

    def each(k_of: Callable[[GroupContext], int]) -> Counts:
        return {gid: bounds.bound(k_of(ctx), ctx.channels) for gid, ctx in contexts.items()}

    if alloc == "marginal":
        counts = _marginal(contexts, bounds, removed, target)
        return counts, {"allocation": alloc, "reached": removed(counts)}
    if alloc == "global":
        norm = {gid: _normalised(ctx.scores(criterion)) for gid, ctx in contexts.items()}
        thresholds = np.unique(np.concatenate(list(norm.values()) + [np.array([-np.inf])]))
        # index i: keep the channels above thresholds[i]; larger i prunes more
        counts_at: Callable[[float], Counts] = lambda i: {  # noqa: E731
            gid: bounds.bound(int(np.sum(norm[gid] > thresholds[int(i)])), contexts[gid].channels) for gid in norm}
        lo, hi, discrete = 0.0, float(len(thresholds) - 1), True
    elif alloc == "uniform":
        counts_at = lambda r: each(lambda ctx: ctx.channels - int(ctx.channels * r))  # noqa: E731
        lo, hi, discrete = 0.0, 1.0 - 1e-12, False
    else:  # own knob or PCA tau: larger values keep more
        if alloc == "own":
            knob = criterion.knob
            count: Callable[[GroupContext, float], int] = criterion.count
            a, b, increasing = knob.low, knob.high, knob.increasing
        else:
            count, a, b, increasing = pca_count, 1e-6, 1.0, True
        # parametrise so that a larger search value always prunes more
        def value(v: float) -> float:
            return a + b - v if increasing else v

        counts_at = lambda v: each(lambda ctx: count(ctx, value(v)))  # noqa: E731
        lo, hi, discrete = a, b, False
    if removed(counts_at(hi)) < target:
        raise ValueError(f"fastprune: allocation {alloc!r} of criterion {criterion.name!r} cannot remove "
                         f"{target:.1%} of the {rule.resource} (it reaches {removed(counts_at(hi)):.1%}; every layer at "
                         f"min_channels would remove {most:.1%}): use another allocation")
    counts, reached, v = _search(counts_at, lo, hi, discrete, removed, target,
                                 lambda g, k: bounds.bound(k, contexts[g].channels),
                                 {gid: ctx.channels for gid, ctx in contexts.items()})
    info: dict[str, Any] = {"allocation": alloc, "reached": reached}
    if alloc == "uniform":
        info["ratio"] = v
    elif alloc in ("own", "redundancy"):
        info["knob"] = {"name": criterion.knob.name if alloc == "own" else "variance", "value": value(v)}
    return counts, info


def _marginal(contexts: dict[str, GroupContext], bounds: Bounds, removed: Removed, target: float) -> Counts:
    """Greedy allocation by cost: from every channel kept, repeatedly drop one (one bounded step)
    from the group whose next dropped principal component explains the least of the group's
    variance (correlation PCA) per unit of the budget's resource it frees, until `target` is met.
    Cheap layers that carry much keep their channels; costly redundant ones give them up.

    Lazy greedy: what a step frees only shrinks as neighbouring groups shrink (a layer's cost is
    a product of its input and output channels), so a group's price only rises while it waits;
    a popped price is recomputed and taken if it is still the lowest."""
    cumulative = {gid: pca_spectrum(ctx) for gid, ctx in contexts.items()}
    counts = {gid: ctx.channels for gid, ctx in contexts.items()}

    def price(gid: str, now: float) -> tuple[float, int] | None:
        k = counts[gid]
        k2 = next((b for b in (bounds.bound(j, contexts[gid].channels) for j in range(k - 1, -1, -1)) if b < k), None)
        if k2 is None:
            return None
        freed = removed({**counts, gid: k2}) - now
        if freed <= 0:
            return None
        lost = float(cumulative[gid][k - 1]) - (float(cumulative[gid][k2 - 1]) if k2 >= 1 else 0.0)
        return lost / freed, k2

    now = removed(counts)
    heap = [(p[0], gid) for gid in sorted(counts) if (p := price(gid, now)) is not None]
    heapq.heapify(heap)
    while now < target and heap:
        _, gid = heapq.heappop(heap)
        p = price(gid, now)
        if p is None:
            continue
        if heap and (p[0], gid) > heap[0]:  # risen while waiting: back in line
            heapq.heappush(heap, (p[0], gid))
            continue
        counts[gid] = p[1]
        now = removed(counts)
        if (q := price(gid, now)) is not None:
            heapq.heappush(heap, (q[0], gid))
    return _closer(counts, removed, target, lambda g, k: bounds.bound(k, contexts[g].channels))


def _search(counts_at: Callable[[float], Counts], lo: float, hi: float, discrete: bool, removed: Removed,
            target: float, bound: Callable[[str, int], int], full: Counts) -> tuple[Counts, float, float]:
    """Bisect the scalar (larger prunes more) to bracketing counts, then step between them
    one layer at a time; the counts closest to `target`, their removed fraction, and the
    scalar of the bracket they start from."""
    a, b = counts_at(lo), counts_at(hi)
    if removed(a) >= target:
        if removed(a) - target <= _CLOSE:
            return a, removed(a), lo
        a = {g: bound(g, full[g]) for g in a}  # even the scalar's mildest end prunes too much: start from all
        if removed(a) >= target:
            return a, removed(a), lo
    for _ in range(200):
        if discrete and hi - lo <= 1:
            break
        if not discrete and sum(a[g] != b[g] for g in a) <= 1:
            break
        mid = (lo + hi) // 2 if discrete else 0.5 * (lo + hi)
        m = counts_at(mid)
        if removed(m) >= target:
            hi, b = mid, m
        else:
            lo, a = mid, m
    best, best_err, at = a, abs(removed(a) - target), lo
    cur = dict(a)
    for g in a:
        if a[g] != b[g]:  # one channel (one bounded step) at a time from a[g] to b[g]
            for k in sorted({bound(g, j) for j in range(b[g], a[g])}, reverse=True):
                cur[g] = k
                err = abs(removed(cur) - target)
                if err <= best_err:
                    best, best_err, at = dict(cur), err, hi
    if abs(removed(b) - target) <= best_err:
        best, best_err, at = b, abs(removed(b) - target), hi
    best = _closer(best, removed, target, bound)
    return best, removed(best), at


def _closer(best: Counts, removed: Removed, target: float, bound: Callable[[str, int], int]) -> Counts:
    """Coarse layers (a tiny model): move single channels where that helps most while the
    counts miss `target` by more than a point."""
    best_err = abs(removed(best) - target)
    while best_err > _CLOSE:
        steps = []
        for g, k in best.items():
            nearer = bound(g, k - 1) if removed(best) < target else bound(g, k + 1)
            if nearer != k:
                trial = {**best, g: nearer}
                steps.append((abs(removed(trial) - target), g, trial))
        err, _, trial = min(steps, default=(best_err, "", best), key=lambda t: (t[0], t[1]))
        if err >= best_err:
            break
        best, best_err = trial, err
    return best


def _tolerance(rule: Tolerance, criterion: Criterion, contexts: dict[str, GroupContext], bounds: Bounds,
               removal: Callable[[dict[str, list[int]]], Any] | None) -> tuple[Counts, dict[str, Any]]:
    if rule.evaluate is None:
        raise ValueError("fastprune: the Tolerance rule needs evaluate=callable(removal) -> validation loss or metric "
                         "(fastprune.surgery.masked_metric(model, metric) makes one)")
    if removal is None:
        raise ValueError("fastprune: the Tolerance rule needs the producer removal of a selection")
    candidates = [{gid: bounds.bound(Ratio(r).count(ctx.channels), ctx.channels) for gid, ctx in contexts.items()}
                  for r in rule.steps]

    def run(counts: Counts) -> float:
        keep = {gid: criterion.select(ctx, counts[gid]) for gid, ctx in contexts.items()}
        return float(rule.evaluate(removal(keep)))

    baseline = float(rule.evaluate({}))
    idx, values = largest_within(candidates, run, baseline, rule, mode=rule.search)
    counts = candidates[idx] if idx >= 0 else {gid: ctx.channels for gid, ctx in contexts.items()}
    return counts, {"tolerance_search": {"baseline": baseline, "ratio": rule.steps[idx] if idx >= 0 else 0.0,
                                         "values": values, "steps": rule.steps, "tolerance": rule.to_dict()}}
