"""The error-tolerance rule shared by every criterion: prune as far as the loss (or a metric) allows.

A `Tolerance` says whether a measured validation value is close enough to the unpruned
baseline, and is the planning rule that prunes as far as that allows: with `evaluate`
(a callable from a removal {producer: removed output channels} to the validation value, e.g.
`fastprune.surgery.masked_metric(model, metric)`) the planner tries uniform ratios from
`steps` (least to most pruning) by `search` ("bisect" or "linear"). `largest_within` walks an ordered list of candidates (least to most pruning) and
returns the last one that stays within it.
"""
from __future__ import annotations

import math
import os
from numbers import Real
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

__all__ = ["Tolerance", "largest_within"]

_MODES = ("bisect", "linear")


def _finite_float(x: Any, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"fastprune: {what} must be a real number, got {type(x).__name__}") from None
    if math.isnan(v):
        raise ValueError(f"fastprune: {what} is NaN (a loss/metric that is not a number cannot be compared)")
    return v


class Tolerance:
    """How far a validation loss or metric may move away from the unpruned baseline.

    For a loss (`higher_is_better=False`, the default) a value is within tolerance when
    `value - baseline <= eps`; for a metric such as mIoU (`higher_is_better=True`) when
    `baseline - value <= eps`. With `relative=True` the allowance is `eps * |baseline|`.
    """

    def __init__(self, epsilon: float, relative: bool = False, higher_is_better: bool = False, *,
                 evaluate: Callable[[dict[str, list[int]]], float] | None = None,
                 steps: Sequence[float] | None = None, search: str = "bisect") -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, Real):
            raise TypeError(f"fastprune: tolerance epsilon must be a real number, got {type(epsilon).__name__}")
        eps = float(epsilon)
        if math.isnan(eps):
            raise ValueError("fastprune: tolerance epsilon is NaN")
        if eps < 0:
            raise ValueError(f"fastprune: tolerance epsilon must be >= 0, got {eps}")
        self.epsilon = eps
        self.relative = bool(relative)
        self.higher_is_better = bool(higher_is_better)
        if evaluate is not None and not callable(evaluate):
            raise TypeError("fastprune: Tolerance evaluate must be callable(removal) -> float")
        if search not in _MODES:
            raise ValueError(f"fastprune: unknown search mode {search!r}; expected one of {_MODES}")
        ratios = [float(r) for r in (steps if steps is not None else [round(0.05 * i, 4) for i in range(1, 20)])]
        if not ratios or any(not 0 <= r < 1 for r in ratios) or ratios != sorted(ratios):
            raise ValueError("fastprune: steps must be increasing fractions removed in [0, 1)")
        self.evaluate, self.steps, self.search = evaluate, ratios, search

    def allowance(self, baseline: float) -> float:
        """The largest allowed worsening for this baseline (eps, or eps*|baseline| if relative)."""
        b = _finite_float(baseline, "baseline")
        if math.isinf(b):
            raise ValueError("fastprune: baseline is infinite; the unpruned model's loss/metric must be finite")
        return self.epsilon * abs(b) if self.relative else self.epsilon

    def worsening(self, baseline: float, value: float) -> float:
        """How much worse `value` is than `baseline` (positive = worse), in the loss/metric's units."""
        b = _finite_float(baseline, "baseline")
        v = _finite_float(value, "value")
        return b - v if self.higher_is_better else v - b

    def within(self, baseline: float, value: float) -> bool:
        """True when `value` is no worse than `baseline` by more than the allowance."""
        allowed = self.allowance(baseline)
        return self.worsening(baseline, value) <= allowed

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "relative": self.relative, "higher_is_better": self.higher_is_better}

    def describe(self) -> dict[str, Any]:
        return {"tolerance": self.epsilon}

    def __repr__(self) -> str:
        return (f"Tolerance(epsilon={self.epsilon!r}, relative={self.relative!r}, "
                f"higher_is_better={self.higher_is_better!r})")


def _bar_disabled(progress: bool) -> bool | None:
    if not progress or os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return True
    return None  # tqdm: show on a terminal only


def largest_within(
    candidates: Sequence[Any],
    evaluate: Callable[[Any], float],
    baseline: float,
    tol: Tolerance,
    mode: str = "bisect",
    progress: bool = True,
) -> tuple[int, list[float]]:
    """Index of the last candidate whose evaluated value stays within `tol` of `baseline`.

    `candidates` run from least to most pruning; `evaluate(candidate)` returns the
    validation loss (or metric). `mode="linear"` evaluates candidates in order and stops at
    the first violation (the learned-gates loop); `mode="bisect"` assumes the values worsen
    monotonically and needs O(log n) evaluations. Returns `(index, values)` where index is
    -1 when no candidate is within tolerance and `values` are the measured values in the
    order they were evaluated (for "linear": those of candidates 0..k).
    """
    if mode not in _MODES:
        raise ValueError(f"fastprune: unknown search mode {mode!r}; expected one of {_MODES}")
    if not isinstance(tol, Tolerance):
        raise TypeError(f"fastprune: tol must be a fastprune Tolerance, got {type(tol).__name__}")
    if not callable(evaluate):
        raise TypeError("fastprune: evaluate must be callable (candidate -> float)")
    tol.allowance(baseline)  # validates the baseline before any evaluation
    cands = list(candidates)
    values: list[float] = []

    def measure(i: int) -> bool:
        raw = evaluate(cands[i])
        try:
            v = _finite_float(raw, "value")
        except ValueError:
            raise ValueError(f"fastprune: evaluating candidate {i} gave NaN (check the validation data/model)") from None
        values.append(v)
        return tol.within(baseline, v)

    if mode == "linear":
        last = -1
        with tqdm(total=len(cands), desc="tolerance (linear)", disable=_bar_disabled(progress)) as bar:
            for i in range(len(cands)):
                ok = measure(i)
                bar.update(1)
                if not ok:
                    break
                last = i
        return last, values

    lo, hi = -1, len(cands)  # invariant: candidates <= lo are within, >= hi are not
    steps = max(1, math.ceil(math.log2(len(cands) + 1))) if cands else 0
    with tqdm(total=steps, desc="tolerance (bisect)", disable=_bar_disabled(progress)) as bar:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if measure(mid):
                lo = mid
            else:
                hi = mid
            bar.update(1)
    return lo, values
