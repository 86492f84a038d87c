"""LFA1-1 as a criterion: factor analysis of the group's correlation matrix picks one filter
per factor; the report carries Bartlett's sphericity, KMO and communalities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Criterion, Knob, register
from .context import GroupContext, as_numpy
from .factor import FACTOR_RULES, LFAResult, factor_count, lfa
from .linalg import basis_matrix, check_basis
from .nci import pca_count

# The ML fit (SQUAREM-accelerated fixed point from psi = 1) stops when the per-sample
# log-likelihood gains < 1e-8, or after this many eigendecompositions. On the layers of a
# trained network many fits do not settle: with many factors the likelihood has a flat ridge
# (gains of ~1e-4 per sample while the uniquenesses still move by 1e-2 after 20,000 steps), so
# there is no single converged answer to wait for. A stated budget makes the selection defined
# and the plan fast; each layer's record says how many steps its fit took and whether it settled.
ITERATIONS = 100


@dataclass(frozen=True)
class LFAOptions:
    factors: str | None = None      # kaiser (default), variance (needs variance=tau), se_scree
    variance: float | None = None   # tau of factors="variance" (given alone: factors="variance")
    basis: str = "correlation"      # or "covariance": the matrix the factor analysis runs on
    iterations: int = ITERATIONS    # eigendecompositions the ML fit may take (ITERATIONS)

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 2:
            raise ValueError(f"fastprune: lfa's iterations must be an integer >= 2, got {self.iterations!r}")
        if self.factors is not None and self.factors not in FACTOR_RULES:
            raise ValueError(f"fastprune: unknown factor-count rule {self.factors!r} ({', '.join(FACTOR_RULES)})")
        if self.factors == "variance" and self.variance is None:
            raise ValueError("fastprune: factors='variance' needs variance=tau")
        check_basis(self.basis)

    @property
    def rule(self) -> str:
        return self.factors or ("variance" if self.variance is not None else "kaiser")


@register
class LFA(Criterion):
    """LFA1-1: k factors by `factors` (Kaiser, variance tau, standard-error scree) or by a rule;
    each factor keeps the not-yet-chosen filter with the largest |varimax loading|. The budget
    search moves tau (factor count by explained variance)."""
    name = "lfa"
    needs = frozenset({"moments", "covariance"})
    Options = LFAOptions
    knob = Knob("variance", 1e-6, 1.0, increasing=True)

    def count(self, ctx: GroupContext, value: float | None = None) -> int:
        if value is not None or self.options.rule == "variance":
            return pca_count(ctx, self.knob_value(value), self.options.basis)
        return factor_count(basis_matrix(ctx.covariance(), self.options.basis), self.options.rule)

    def _n(self, ctx: GroupContext) -> tuple[float, str]:
        """Bartlett's n: the images (independent draws), else the samples."""
        m = ctx.moments()
        images = getattr(m, "images", 0)
        return (float(images), "images") if images else (float(np.ravel(as_numpy(m.count))[0]), "samples")

    def fit(self, ctx: GroupContext, k: int) -> LFAResult:
        o = self.options
        return ctx.cached(("lfa", int(k), o.basis, o.iterations),
                          lambda: lfa(ctx.covariance(), k=k, n_samples=self._n(ctx)[0], basis=o.basis,
                                      max_iter=o.iterations))

    def scores(self, ctx: GroupContext) -> np.ndarray:
        """The chosen filters at the own count first, then by largest |loading|."""
        res = self.fit(ctx, self.count(ctx))
        scores = res.scores.copy()
        scores[res.keep] += scores.max(initial=0.0) + 1.0
        return scores

    def select(self, ctx: GroupContext, k: int) -> list[int]:
        return list(self.fit(ctx, k).keep)

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        res = self.fit(ctx, len(keep))
        chi2, pval, dof = res.bartlett
        n, source = self._n(ctx)
        return {"factors": len(res.keep), "bartlett_chi2": _finite(chi2), "bartlett_p": _finite(pval),
                "bartlett_dof": dof, "bartlett_n": n, "bartlett_n_from": source, "kmo": _finite(res.kmo),
                "communalities": res.communalities.tolist(), "fit_iterations": res.fit_iterations,
                "fit_converged": res.fit_converged}


def _finite(v: float) -> float | None:
    """None for a statistic that is not finite (Bartlett's chi2 of exactly collinear channels;
    Bartlett's test with too few images)."""
    return float(v) if np.isfinite(v) else None
