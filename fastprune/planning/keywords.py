"""Keyword options (the CLI's flags, a config's dict) -> a criterion, a rule and bounds.

`compose("lfa", factors="variance", variance=0.99, exclude=[...])` is what
`plan(model, stats, *compose(...)[:2], bounds=...)` takes. Options that name a field of the
criterion's options go to the criterion; `variance` also sets the `Variance` rule when no
other rule is given; with none, the criterion's own count (`Own`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from fastprune.criteria import Criterion, get

from .rules import Bounds, Budget, Own, Ratio, Variance
from .tolerance import Tolerance


def compose(method: str | Criterion, *, variance: float | None = None, ratio: float | None = None,
            target_macs: float | None = None, target_params: float | None = None, allocation: str | None = None,
            tolerance: float | None = None, evaluate: Callable[[dict[str, list[int]]], float] | None = None,
            relative: bool = False, higher_is_better: bool = False, steps: Sequence[float] | None = None,
            search: str = "bisect", basis: str | None = None, min_channels: int = 1, round_to: int = 1, exclude: Sequence[str] | None = (),
            **options: Any) -> tuple[Criterion, Any, Bounds]:
    given = [k for k, v in (("ratio", ratio), ("target_macs", target_macs), ("target_params", target_params),
                            ("tolerance", tolerance)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"fastprune: give one rule, got {', '.join(given)}")
    if allocation is not None and target_macs is None and target_params is None:
        raise ValueError("fastprune: allocation= qualifies a budget (target_macs= or target_params=)")
    if isinstance(method, Criterion):
        crit = method
        if options:
            raise ValueError(f"fastprune: options {sorted(options)} go to the criterion's constructor")
    else:
        crit = get(method)  # validates the name first
        fields = {f.name for f in dataclasses.fields(crit.Options)}
        if variance is not None and "variance" in fields:
            options["variance"] = variance
        if basis is not None and "basis" in fields:
            options["basis"] = basis
        crit = get(method, **{k: v for k, v in options.items() if v is not None})
    if basis is not None and "basis" not in {f.name for f in dataclasses.fields(crit.Options)} and (
            variance is None or any(v is not None for v in (ratio, target_macs, target_params, tolerance))):
        raise ValueError(f"fastprune: basis= has no use here: it is the matrix of a PCA count (variance=) "
                         f"or of pca_nci/lfa, not of {crit.name!r} with this rule")
    rule: Any
    if ratio is not None:
        rule = Ratio(ratio)
    elif target_macs is not None or target_params is not None:
        rule = Budget(macs=target_macs, params=target_params, allocation=allocation)
    elif tolerance is not None:
        rule = Tolerance(tolerance, relative=relative, higher_is_better=higher_is_better, evaluate=evaluate,
                         steps=steps, search=search)
    elif variance is not None:
        rule = Variance(variance, basis or "correlation")
    else:
        rule = Own()
    return crit, rule, Bounds(int(min_channels), int(round_to), tuple(exclude or ()))
