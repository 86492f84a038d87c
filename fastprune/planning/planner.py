"""`plan(model, stats, method=..., **rule)`: from saved statistics to a `Plan`, no data needed."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from fastprune._documents import weights_digest

from .cost import CostModel
from .plan import Plan
from .rules import bound, check_fraction, global_threshold, ratio_count, top_k

_OWN_SELECTION = ("pca_nci", "msd_nci", "lfa")


def _producer_channels(model: torch.nn.Module, name: str) -> int:
    mod = dict(model.named_modules())[name]
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(mod, attr):
            return int(getattr(mod, attr))
    raise ValueError(f"fastprune: cannot tell how many output channels '{name}' has")


def _layer_count(method: str, channels: int, scored: Any, cov: np.ndarray | None, variance: float | None,
                 ratio: float | None, factors: str | None) -> int | None:
    from fastprune.criteria.factor import factor_count
    from fastprune.criteria.linalg import components_for_variance, correlation
    if ratio is not None:
        return ratio_count(channels, ratio)
    if factors is not None and cov is not None:
        return factor_count(correlation(cov), factors, variance)
    if variance is not None and method not in _OWN_SELECTION:
        if cov is None:
            raise ValueError("fastprune: variance= needs the covariance (collect with covariance=True)")
        return components_for_variance(correlation(cov), variance)
    if scored.keep is not None:
        return len(scored.keep)
    return None


def plan(
    model: torch.nn.Module,
    stats: Any,
    method: str = "l1",
    example_inputs: Any = None,
    *,
    variance: float | None = None,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    tolerance: float | None = None,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    relative: bool = False,
    higher_is_better: bool = False,
    steps: Sequence[float] | None = None,
    search: str = "bisect",
    factors: str | None = None,
    alpha: float | None = None,
    percentile: float | None = None,
    min_channels: int = 1,
    round_to: int = 1,
    exclude: Sequence[str] = (),
    seed: int = 0,
    check: bool = True,
    train_data: Any = None,
    val_data: Any = None,
    gates: dict[str, Any] | None = None,
) -> Plan:
    """Which output channels each producer keeps, by criterion `method` and one rule:

    per layer: `variance=tau` (PCA count), `ratio=r`, `factors=` (LFA count rule), or the
    criterion's own cut-off (msd_nci: `alpha`/`percentile`; pca_nci; lfa); global:
    `target_macs=r` / `target_params=r` (fraction removed, reached within 2 points);
    `tolerance=eps` with `evaluate(model) -> loss/metric`: the largest uniform ratio (from
    `steps`) whose masked model stays within eps of the unpruned one. `min_channels`,
    `round_to` bound every count; producers in `exclude` keep everything.

    `method="gates"` (learned importance weights) trains from data instead of statistics:
    it needs `tolerance=eps`, `train_data` and `val_data` (re-iterable (inputs, targets)
    batches); `evaluate` and `higher_is_better` switch from the loss to a metric, and `gates`
    passes options on to `fastprune.train.gates.gates_plan` (init, epochs, lr, fold, ...).
    `stats` may be None for this method.
    """
    from fastprune.criteria import METHODS, score

    if stats is not None:
        stats.check_complete()
    digest = weights_digest(model)  # of the weights planned on (gates may fold into them)
    if method == "gates":
        plan = _gates(model, stats, tolerance, relative, higher_is_better, evaluate, example_inputs,
                      train_data, val_data, gates or {})
        plan.meta["weights_digest"] = digest
        return plan
    if method not in METHODS:
        raise ValueError(f"fastprune: unknown criterion {method!r}; choose one of {', '.join(METHODS)}, gates")
    rules = {k: v for k, v in (("variance", variance), ("ratio", ratio), ("target_macs", target_macs),
                               ("target_params", target_params), ("tolerance", tolerance)) if v is not None}
    exclusive = [k for k in rules if k != "variance"]
    if len(exclusive) > 1:
        raise ValueError(f"fastprune: give one rule, got {', '.join(exclusive)}")
    if variance is not None and not 0 < variance <= 1:
        raise ValueError(f"fastprune: variance (tau) must be in (0, 1], got {variance}")
    for name in ("ratio", "target_macs", "target_params"):
        if rules.get(name) is not None:
            check_fraction(name, rules[name])
    if int(min_channels) < 1 or int(round_to) < 1:
        raise ValueError("fastprune: min_channels and round_to must be >= 1")
    if tolerance is not None and evaluate is None:
        raise ValueError("fastprune: tolerance= needs evaluate=callable(model) -> validation loss or metric")
    if example_inputs is None:
        example_inputs = stats.example_inputs(model)
    if check:
        stats.check_model(model, example_inputs)

    producers_all = {p["module"] for g in stats.groups.values() for p in g.producers}
    bad = [e for e in exclude if e not in producers_all]
    if bad:
        raise ValueError(f"fastprune: exclude names no producer of a prunable group: {bad}")
    gids = [gid for gid, g in stats.groups.items()
            if g.prunable and not any(p["module"] in exclude for p in g.producers)]
    opts = {"variance": variance, "factors": factors, "alpha": alpha, "percentile": percentile, "seed": seed}
    scored = {gid: score(method, model, stats, gid, **opts) for gid in gids}
    covs = {gid: _cov(stats, gid) for gid in gids}
    cost = CostModel(model, example_inputs, stats)

    keep: dict[str, list[int]] = {}
    search_info: dict[str, Any] = {}
    if target_macs is not None or target_params is not None:
        which = 1 if target_macs is not None else 0
        target = target_macs if target_macs is not None else target_params
        keep = global_threshold({g: s.scores for g, s in scored.items()},
                                lambda removed: float(cost.evaluate(removed)[which]),
                                float(target), int(min_channels), int(round_to))
    elif tolerance is not None:
        keep, search_info = _tolerance_search(model, stats, method, example_inputs, scored, covs, opts,
                                              tolerance, evaluate, relative, higher_is_better, steps, search,
                                              int(min_channels), int(round_to), gids)
    else:
        for gid in gids:
            keep[gid] = _per_layer(model, stats, method, gid, scored[gid], covs[gid], opts, variance, ratio,
                                   factors, int(min_channels), int(round_to))
    plan = _assemble(model, stats, method, keep, scored, covs, cost, rules, opts, search_info,
                     int(min_channels), int(round_to))
    plan.meta["weights_digest"] = digest
    return plan


def _cov(stats: Any, gid: str) -> np.ndarray | None:
    m = stats.moments.get(gid)
    if m is None or not stats.meta.get("covariance", True):
        return None
    return np.asarray(torch.as_tensor(m.cov).to(torch.float64).cpu().numpy())


def _per_layer(model, stats, method, gid, sc, cov, opts, variance, ratio, factors, min_channels, round_to):
    from fastprune.criteria import score
    c = stats.group(gid).channels
    k = _layer_count(method, c, sc, cov, variance, ratio, factors)
    if k is None:
        raise ValueError(f"fastprune: criterion {method!r} needs a rule: variance=, ratio=, target_macs=, "
                         "target_params= or tolerance=")
    k = bound(k, c, min_channels, round_to)
    if method == "lfa" and (sc.keep is None or len(sc.keep) != k):
        sc2 = score("lfa", model, stats, gid, **{**opts, "k": k})
        sc.scores, sc.keep, sc.info = sc2.scores, sc2.keep, sc2.info
    if sc.keep is not None and len(sc.keep) == k:
        return sorted(sc.keep)
    return top_k(sc.scores, k)


def _tolerance_search(model, stats, method, example_inputs, scored, covs, opts, eps, evaluate, relative,
                      higher_is_better, steps, search, min_channels, round_to, gids):
    from fastprune.surgery import masked

    from .tolerance import Tolerance, largest_within
    tol = Tolerance(eps, relative=relative, higher_is_better=higher_is_better)
    ratios = [float(r) for r in (steps if steps is not None else np.round(np.arange(0.05, 0.951, 0.05), 4))]
    if any(not 0 <= r < 1 for r in ratios) or ratios != sorted(ratios):
        raise ValueError("fastprune: steps must be increasing fractions removed in [0, 1)")
    candidates = [{gid: top_k(scored[gid].scores, bound(ratio_count(stats.group(gid).channels, r),
                                                        stats.group(gid).channels, min_channels, round_to))
                   for gid in gids} for r in ratios]

    def removal_of(keep):
        return _removal(model, stats, keep)

    def run(keep) -> float:
        with masked(model, removal_of(keep), example_inputs):
            return float(evaluate(model))

    baseline = float(evaluate(model))
    idx, values = largest_within(candidates, run, baseline, tol, mode=search)
    keep = candidates[idx] if idx >= 0 else {gid: list(range(stats.group(gid).channels)) for gid in gids}
    return keep, {"baseline": baseline, "ratio": ratios[idx] if idx >= 0 else 0.0, "values": values,
                  "steps": ratios, "tolerance": tol.to_dict()}


def _producer_keep(model, stats, keep: dict[str, list[int]]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Group-index selections -> each producer's kept output-channel indices."""
    removed: dict[str, set[int]] = {}
    channels: dict[str, int] = {}
    for gid, k in keep.items():
        g = stats.group(gid)
        ks = set(k)
        for p in g.producers:
            name = p["module"]
            channels[name] = _producer_channels(model, name)
            removed.setdefault(name, set()).update(p["indices"][i] for i in range(g.channels) if i not in ks)
    return {n: [i for i in range(channels[n]) if i not in removed[n]] for n in channels}, channels


def _removal(model, stats, keep):
    kept, channels = _producer_keep(model, stats, keep)
    return {n: [i for i in range(channels[n]) if i not in set(k)] for n, k in kept.items()
            if len(k) < channels[n]}


def _assemble(model, stats, method, keep, scored, covs, cost, rules, opts, search_info, min_channels, round_to):
    from fastprune.criteria.linalg import retained_variance
    removed = {gid: set(range(stats.group(gid).channels)) - set(k) for gid, k in keep.items()}
    params_after, macs_after = cost.evaluate(removed)
    layers: dict[str, dict[str, Any]] = {}
    for gid, k in keep.items():
        g = stats.group(gid)
        names = [p["module"] for p in g.producers]
        lp = lm = 0
        for n in names:
            if n in cost.layers:
                p, m = cost.layer_cost(n, removed)
                lp, lm = lp + p, lm + m
        rec = {"group": gid, "producers": names, "channels": g.channels, "kept": len(k), "keep": list(k),
               "scores": [float(x) for x in scored[gid].scores], "params": int(lp), "macs": int(lm)}
        if covs[gid] is not None:
            rec["retained_variance"] = retained_variance(covs[gid], k)
        rec.update({f"criterion_{a}": b for a, b in scored[gid].info.items()})
        layers[names[0] if names else gid] = rec
    prod_keep, channels = _producer_keep(model, stats, keep)
    meta = {"method": method, "rule": {k: v for k, v in rules.items()}, "options": {k: v for k, v in opts.items() if v is not None},
            "min_channels": min_channels, "round_to": round_to, "fingerprint": stats.fingerprint,
            "params_before": int(cost.base_params), "params_after": int(params_after),
            "macs_before": int(cost.base_macs), "macs_after": int(macs_after),
            "params_removed": 1 - params_after / cost.base_params if cost.base_params else 0.0,
            "macs_removed": 1 - macs_after / cost.base_macs if cost.base_macs else 0.0,
            "macs_unit": "multiply-accumulates"}
    if search_info:
        meta["tolerance_search"] = search_info
    return Plan(keep=prod_keep, channels=channels, layers=layers, meta=meta)


def _gates(model, stats, tolerance, relative, higher_is_better, evaluate, example_inputs,
           train_data, val_data, options: dict[str, Any]) -> Plan:
    """method="gates": the learned-importance planner, under the shared tolerance rule."""
    from fastprune.planning.tolerance import Tolerance
    from fastprune.train.gates import gates_plan

    if tolerance is None:
        raise ValueError("fastprune: method='gates' prunes by error tolerance: give tolerance=eps")
    if train_data is None or val_data is None:
        raise ValueError("fastprune: method='gates' trains importance weights: give train_data= and val_data=")
    if example_inputs is None and stats is not None:
        example_inputs = stats.example_inputs(model)
    if stats is not None and example_inputs is not None:
        stats.check_model(model, example_inputs)
    options = dict(options)
    init = options.pop("init", "ones")
    if evaluate is not None:
        options["evaluate"] = evaluate
    if example_inputs is not None:
        options.setdefault("example_inputs", example_inputs)
    tol = Tolerance(tolerance, relative=relative, higher_is_better=higher_is_better)
    fingerprint = stats.fingerprint if stats is not None else None
    plan = gates_plan(model, train_data, val_data, tol, init, **options)
    if fingerprint is not None:
        plan.meta["fingerprint"] = fingerprint
    return plan
