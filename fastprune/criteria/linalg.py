"""Covariance algebra shared by the criteria: correlation, PCA, retained variance.

Everything works on the float64 co-moment matrices the statistics hold, never on raw
activations, so a saved `Statistics` is enough to score and plan.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-12


def as_matrix(cov) -> np.ndarray:
    """A square float64 numpy matrix from a torch tensor or array (symmetrised)."""
    a = np.asarray(cov.detach().cpu().numpy() if hasattr(cov, "detach") else cov, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"fastprune: expected a square covariance matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("fastprune: covariance matrix holds non-finite values")
    return 0.5 * (a + a.T)


BASES = ("correlation", "covariance")


def check_basis(basis: str) -> str:
    if basis not in BASES:
        raise ValueError(f"fastprune: basis must be one of {', '.join(BASES)}, got {basis!r}")
    return basis


def basis_matrix(cov, basis: str = "correlation") -> np.ndarray:
    """The matrix PCA and factor analysis run on: the correlation (every channel with unit
    variance; PCA of standardised data) or the covariance itself (PCA of the raw feature maps,
    scikit-learn's PCA on the data)."""
    if basis == "correlation":
        return correlation(cov)
    if basis == "covariance":
        return as_matrix(cov)
    raise ValueError(f"fastprune: basis must be one of {', '.join(BASES)}, got {basis!r}")


def correlation(cov) -> np.ndarray:
    """Correlation from covariance; a constant (zero-variance) channel gets correlation 0
    with every other channel and 1 with itself, so it counts as one independent variable."""
    s = as_matrix(cov)
    d = np.sqrt(np.clip(np.diag(s), 0.0, None))
    live = d > _EPS * max(1.0, float(d.max(initial=0.0)))
    inv = np.where(live, 1.0 / np.where(live, d, 1.0), 0.0)
    r = s * inv[:, None] * inv[None, :]
    np.fill_diagonal(r, 1.0)
    return np.clip(r, -1.0, 1.0)


def eigenvalues(mat) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, descending, negatives (round-off) clipped to 0."""
    w = np.linalg.eigvalsh(as_matrix(mat))[::-1]
    return np.clip(w, 0.0, None)


def explained_variance_ratio(mat) -> np.ndarray:
    """PCA explained-variance ratio per component (descending) of a covariance/correlation."""
    w = eigenvalues(mat)
    total = w.sum()
    if total <= 0:
        return np.zeros_like(w)
    return w / total


def components_for_variance(mat, tau: float) -> int:
    """Fewest principal components whose cumulative explained variance reaches `tau`."""
    return count_for_variance(np.cumsum(explained_variance_ratio(mat)), tau)


def count_for_variance(cumulative: np.ndarray, tau: float) -> int:
    """Fewest components whose cumulative explained-variance ratio (`cumulative`, ascending,
    as `np.cumsum(explained_variance_ratio(...))`) reaches `tau` (at least 1)."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"fastprune: variance threshold tau must be in (0, 1], got {tau}")
    if len(cumulative) == 0 or cumulative[-1] == 0:
        return 1
    return int(min(len(cumulative), np.searchsorted(cumulative, tau - 1e-12) + 1))


def retained_variance(cov, keep) -> float:
    """tr(S[:,K] S[K,K]^-1 S[K,:]) / tr(S): the fraction of the layer's total variance a
    linear regression of all channels on the kept channels K explains."""
    s = as_matrix(cov)
    k = np.asarray(sorted(int(i) for i in keep), dtype=np.int64)
    total = float(np.trace(s))
    if total <= 0:
        return 1.0
    if k.size == 0:
        return 0.0
    skk = s[np.ix_(k, k)]
    sk = s[:, k]
    # pseudo-inverse via eigendecomposition: dead or collinear kept channels explain nothing extra
    w, v = np.linalg.eigh(skk)
    cut = _EPS * 1e3 * max(float(w.max(initial=0.0)), _EPS)
    winv = np.where(w > cut, 1.0 / np.where(w > cut, w, 1.0), 0.0)
    proj = sk @ v
    explained = float(np.sum(proj * proj * winv[None, :]))
    return float(min(max(explained / total, 0.0), 1.0))
