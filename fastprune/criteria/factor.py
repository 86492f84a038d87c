"""Maximum-likelihood factor analysis of a correlation matrix, varimax, factor counts,
adequacy tests, and LFA1-1's one-to-one assignment of factors to filters.

The ML fit is the iterated eigen-decomposition of Psi^-1/2 S Psi^-1/2 (Barber, "Bayesian
Reasoning and Machine Learning", alg. 21.1; the algorithm scikit-learn's FactorAnalysis runs
on data through an SVD), here on the covariance/correlation matrix S itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

from .linalg import as_matrix, basis_matrix, components_for_variance, correlation, eigenvalues

_SMALL = 1e-12


@dataclass
class FactorFit:
    loadings: np.ndarray      # (p, k): variable i's loading on factor j
    noise_variance: np.ndarray  # (p,) uniquenesses psi
    loglike: float            # per-sample log-likelihood at the end
    n_iter: int
    converged: bool           # False: stopped at max_iter before the likelihood settled to tol

    @property
    def communalities(self) -> np.ndarray:
        return np.sum(self.loadings**2, axis=1)


def ml_factor_analysis(cov, k: int, tol: float = 1e-2, max_iter: int = 1000, n_samples: float = 1.0,
                       start: np.ndarray | None = None) -> FactorFit:
    """ML factor analysis with `k` factors of covariance `cov` (use a correlation matrix for
    standardised variables). `tol` is on the change of the log-likelihood of `n_samples`
    samples, as in scikit-learn (whose default n_samples is the data size).

    The fixed-point map on the uniquenesses psi (one eigendecomposition each) is accelerated by
    SQUAREM (Varadhan & Roland 2008: a squared extrapolation of two map steps, kept only when
    it does not lower the likelihood), so it reaches the same fixed point in a fraction of the
    plain iteration's eigendecompositions. `n_iter` counts eigendecompositions (at most `max_iter`);
    `converged` is False when the budget ran out before the likelihood settled to `tol`."""
    s = as_matrix(cov)
    p = s.shape[0]
    if not 1 <= k <= p:
        raise ValueError(f"fastprune: factor count must be in 1..{p}, got {k}")
    var = np.diag(s).copy()
    llconst = p * np.log(2.0 * np.pi) + k
    calls = 0

    def step(psi: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(log-likelihood at psi, loadings at psi, the map's next psi)."""
        nonlocal calls
        calls += 1
        sqrt_psi = np.sqrt(psi) + _SMALL
        w, v = np.linalg.eigh(s / sqrt_psi[:, None] / sqrt_psi[None, :])
        w, v = w[::-1], v[:, ::-1]
        top = w[:k]
        loadings = (np.sqrt(np.maximum(top - 1.0, 0.0))[None, :] * v[:, :k]) * sqrt_psi[:, None]
        ll = llconst + np.sum(np.log(np.maximum(top, _SMALL))) + float(np.sum(w[k:])) + np.sum(np.log(psi))
        return -n_samples / 2.0 * ll, loadings, np.maximum(var - np.sum(loadings**2, axis=1), _SMALL)

    psi0 = np.ones(p) if start is None else np.clip(np.asarray(start, dtype=np.float64), _SMALL, np.maximum(var, _SMALL))
    ll0, loadings, psi1 = step(psi0)
    converged = False
    while calls + 2 <= max_iter:  # each round: a plain step and the extrapolated one
        ll1, loadings1, psi2 = step(psi1)
        r = psi1 - psi0
        v = psi2 - psi1 - r
        nv = float(np.sqrt(v @ v))
        alpha = min(-float(np.sqrt(r @ r)) / nv, -1.0) if nv > 0 else -1.0
        cand = np.clip(psi0 - 2.0 * alpha * r + alpha * alpha * v, _SMALL, np.maximum(var, _SMALL))
        ll_c, loadings_c, next_c = step(cand)
        if ll_c >= ll1:
            new_psi, ll_new, loadings_new, following = cand, ll_c, loadings_c, next_c
        else:  # the extrapolation overshot: keep the plain step
            new_psi, ll_new, loadings_new, following = psi1, ll1, loadings1, psi2
        if ll_new - ll0 < tol:
            if ll_new >= ll0:
                psi0, ll0, loadings = new_psi, ll_new, loadings_new
            converged = True
            break
        psi0, ll0, loadings, psi1 = new_psi, ll_new, loadings_new, following
    return FactorFit(loadings=loadings, noise_variance=psi0, loglike=float(ll0), n_iter=calls, converged=converged)


def varimax(loadings: np.ndarray, tol: float = 1e-6, max_iter: int = 100) -> np.ndarray:
    """Kaiser's varimax rotation of a (p, k) loading matrix (returns rotated loadings)."""
    a = np.asarray(loadings, dtype=np.float64)
    p, k = a.shape
    if k < 2:
        return a.copy()
    rot = np.eye(k)
    crit = 0.0
    for _ in range(max_iter):
        b = a @ rot
        b2 = b * b  # b * b * b, not b**3: numpy's general power is ~8x the whole iteration's products
        target = b * (b2 - np.sum(b2, axis=0) / p)
        u, sv, vt = np.linalg.svd(a.T @ target)
        rot = u @ vt
        new = float(np.sum(sv))
        if crit != 0 and new < crit * (1 + tol):
            break
        crit = new
    return a @ rot


# ---- how many factors -------------------------------------------------------------------

def _unit_mean(mat) -> np.ndarray:
    """Eigenvalues scaled to mean 1: a correlation matrix's as they are (its trace is p); a
    covariance's in units of the average variance, the scale-free form of the rules below."""
    w = eigenvalues(mat)
    mean = float(np.mean(w)) if len(w) else 0.0
    return w / mean if mean > 0 else w


def kaiser_count(mat) -> int:
    """Kaiser's rule: eigenvalues of the correlation matrix that reach 1 (at least 1); of a
    covariance matrix, those that reach the mean eigenvalue (the same rule, scale-free)."""
    return max(1, int(np.sum(_unit_mean(mat) >= 1.0 - 1e-12)))


def se_scree_count(corr) -> int:
    """Standard-error scree (Zoski & Jurs 1996): walk down the eigenvalues; factor i is
    retained while the standard error of the estimate of a straight line fitted to the
    eigenvalues i..p (against their position) exceeds 1/p."""
    w = _unit_mean(corr)
    p = len(w)
    count = 0
    for i in range(p - 2):
        y = w[i:]
        x = np.arange(len(y), dtype=np.float64)
        slope, icpt = np.polyfit(x, y, 1)
        resid = y - (slope * x + icpt)
        see = np.sqrt(np.sum(resid**2) / (len(y) - 2))
        if see > 1.0 / p:
            count += 1
        else:
            break
    return max(1, count)


FACTOR_RULES = ("kaiser", "variance", "se_scree")


def factor_count(corr, rule: str = "kaiser", tau: float | None = None) -> int:
    """Number of factors by `rule`: 'kaiser', 'variance' (needs tau) or 'se_scree'."""
    if rule == "kaiser":
        return kaiser_count(corr)
    if rule == "variance":
        if tau is None:
            raise ValueError("fastprune: factors='variance' needs variance=tau")
        return components_for_variance(corr, tau)
    if rule == "se_scree":
        return se_scree_count(corr)
    raise ValueError(f"fastprune: unknown factor-count rule {rule!r} (kaiser, variance, se_scree)")


# ---- adequacy -----------------------------------------------------------------------------

def bartlett_sphericity(corr, n_samples: float) -> tuple[float, float, int]:
    """Bartlett's test that the correlation matrix is the identity: (chi2, p-value, dof), with
    `n_samples` independent samples. With too few (n - 1 - (2p + 5)/6 <= 0: fewer than about
    p/3 + 2 samples) the test says nothing: chi2 and p are NaN."""
    r = correlation(corr)
    p = r.shape[0]
    if float(n_samples) - 1.0 - (2.0 * p + 5.0) / 6.0 <= 0:
        return math.nan, math.nan, p * (p - 1) // 2
    sign, logdet = np.linalg.slogdet(r)
    if sign <= 0:
        logdet = -np.inf  # singular: perfectly collinear channels, sphericity rejected outright
    chi2 = -(float(n_samples) - 1.0 - (2.0 * p + 5.0) / 6.0) * logdet
    dof = p * (p - 1) // 2
    pval = float(_sps.chi2.sf(chi2, dof)) if np.isfinite(chi2) else 0.0
    return float(chi2), pval, dof


def kmo(corr) -> tuple[float, np.ndarray]:
    """Kaiser-Meyer-Olkin sampling adequacy: (overall, per-variable)."""
    r = correlation(corr)
    inv = np.linalg.pinv(r, hermitian=True)
    d = np.sqrt(np.clip(np.diag(inv), _SMALL, None))
    partial = -inv / d[:, None] / d[None, :]
    off = ~np.eye(r.shape[0], dtype=bool)
    r2 = np.where(off, r**2, 0.0)
    p2 = np.where(off, partial**2, 0.0)
    denom_each = r2.sum(1) + p2.sum(1)
    each = np.where(denom_each > 0, r2.sum(1) / np.where(denom_each > 0, denom_each, 1.0), 0.0)
    denom = r2.sum() + p2.sum()
    return (float(r2.sum() / denom) if denom > 0 else 0.0), each


# ---- LFA1-1 -------------------------------------------------------------------------------

def assign_one_to_one(loadings: np.ndarray) -> list[int]:
    """Each factor (strongest first, by its sum of squared loadings) takes the not-yet-chosen
    variable with the largest |loading|; returns the chosen variables in factor order."""
    a = np.abs(np.asarray(loadings, dtype=np.float64))
    p, k = a.shape
    if k > p:
        raise ValueError(f"fastprune: {k} factors cannot be assigned one-to-one to {p} filters")
    order = np.argsort(-np.sum(a**2, axis=0), kind="stable")
    taken = np.zeros(p, dtype=bool)
    chosen = []
    for j in order:
        col = np.where(taken, -1.0, a[:, j])
        i = int(np.argmax(col))
        taken[i] = True
        chosen.append(i)
    return chosen


@dataclass
class LFAResult:
    keep: list[int]
    loadings: np.ndarray  # rotated, (p, k)
    communalities: np.ndarray
    scores: np.ndarray    # per channel: largest |rotated loading| (how well a factor names it)
    bartlett: tuple[float, float, int]
    kmo: float
    kmo_per_channel: np.ndarray
    fit_iterations: int       # eigendecompositions the ML fit took
    fit_converged: bool


def lfa(cov, k: int | None = None, rule: str = "kaiser", tau: float | None = None,
        n_samples: float = 1.0, tol: float = 1e-8, max_iter: int = 1000, basis: str = "correlation") -> LFAResult:
    """LFA1-1 on a covariance: ML factor analysis with k factors (or by `rule`) of the
    correlation (`basis="correlation"`: standardised channels) or of the covariance itself
    (raw channels, as scikit-learn's FactorAnalysis on the data), varimax, one filter per
    factor. Bartlett's test (with `n_samples` independent samples) and KMO are about the
    correlation matrix in either basis."""
    r = correlation(cov)
    s = basis_matrix(cov, basis)
    if k is None:
        k = factor_count(s, rule, tau)
    k = min(int(k), r.shape[0])
    fit = ml_factor_analysis(s, k, tol=tol, max_iter=max_iter)  # tol per sample
    rot = varimax(fit.loadings)
    overall, each = kmo(r)
    return LFAResult(
        keep=sorted(assign_one_to_one(rot)),
        loadings=rot,
        communalities=np.sum(rot**2, axis=1),
        scores=np.max(np.abs(rot), axis=1),
        bartlett=bartlett_sphericity(r, n_samples),
        kmo=overall,
        kmo_per_channel=each,
        fit_iterations=fit.n_iter,
        fit_converged=fit.converged,
    )
