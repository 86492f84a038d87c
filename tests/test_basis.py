"""PCA counts and LFA on the correlation or the covariance basis, against scikit-learn on planted
data whose channel scales differ (0.2 to 5): `PCA(tau)` on the raw data (covariance) and on the
standardised data (correlation), `FactorAnalysis(rotation="varimax")` on both."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA, FactorAnalysis

from fastprune.criteria import factor, linalg

P, K = 32, 4


def _planted(seed: int, n: int = 6000):
    """P channels in K clusters (channel j follows factor j // (P // K)), scales 0.2 .. 5."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, K))
    a = 0.15 * rng.standard_normal((K, P))
    for j in range(P):
        a[j // (P // K), j] = rng.uniform(0.8, 1.2)
    x = z @ a + 0.3 * rng.standard_normal((n, P))
    return x * np.exp(rng.uniform(np.log(0.2), np.log(5.0), P)) + rng.uniform(-3, 3, P)


def _standardised(x):
    return (x - x.mean(0)) / x.std(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.8, 0.9, 0.95])
def test_pca_counts_equal_sklearn_in_both_bases(seed, tau):
    x = _planted(seed)
    cov = np.cov(x, rowvar=False)
    by_cov = linalg.components_for_variance(linalg.basis_matrix(cov, "covariance"), tau)
    by_corr = linalg.components_for_variance(linalg.basis_matrix(cov, "correlation"), tau)
    assert by_cov == PCA(tau, svd_solver="full").fit(x).n_components_
    assert by_corr == PCA(tau, svd_solver="full").fit(_standardised(x)).n_components_


def test_the_bases_disagree_when_scales_differ():
    """The point of the option: with scales 0.2 .. 5 the covariance's spectrum is dominated by
    the large channels, so fewer components reach tau than on the correlation."""
    x = _planted(0)
    cov = np.cov(x, rowvar=False)
    counts = {b: linalg.components_for_variance(linalg.basis_matrix(cov, b), 0.95) for b in linalg.BASES}
    assert counts["covariance"] < counts["correlation"]
    with pytest.raises(ValueError, match="basis must be one of"):
        linalg.basis_matrix(cov, "raw")


def _match(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest |difference| of two loading matrices after matching columns (order and sign)."""
    worst, used = 0.0, set()
    for j in range(ours.shape[1]):
        d, i = min((min(np.abs(ours[:, j] - ref[:, i]).max(), np.abs(ours[:, j] + ref[:, i]).max()), i)
                   for i in range(ref.shape[1]) if i not in used)
        used.add(i)
        worst = max(worst, d)
    return worst


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("basis", ["correlation", "covariance"])
def test_lfa_equals_sklearn_factor_analysis_with_varimax(basis):
    x = _planted(3)
    data = _standardised(x) if basis == "correlation" else x - x.mean(0)
    ref = FactorAnalysis(n_components=K, rotation="varimax", svd_method="lapack", tol=1e-10, max_iter=20000).fit(data)
    cov = np.cov(x, rowvar=False, bias=True)  # scikit-learn's covariance divides by n
    res = factor.lfa(cov, k=K, basis=basis, n_samples=len(x), tol=1e-10, max_iter=20000)
    loadings = ref.components_.T
    scale = np.abs(loadings).max()
    assert _match(res.loadings, loadings) < 1e-3 * scale
    assert res.keep == sorted(factor.assign_one_to_one(loadings))  # the same filters kept


def test_lfa_picks_change_with_the_basis_and_kaiser_is_scale_free():
    x = _planted(4)
    cov = np.cov(x, rowvar=False)
    a, b = factor.lfa(cov, k=K, basis="correlation"), factor.lfa(cov, k=K, basis="covariance")
    assert a.keep != b.keep
    # Kaiser on a covariance: eigenvalues of at least the mean one; rescaling every channel
    # by the same factor changes nothing, and on a correlation matrix it is the classic >= 1
    assert factor.kaiser_count(cov) == factor.kaiser_count(cov * 1e6) == \
        int(np.sum(np.linalg.eigvalsh(cov) >= np.linalg.eigvalsh(cov).mean()))
    corr = linalg.correlation(cov)
    assert factor.kaiser_count(corr) == int(np.sum(np.linalg.eigvalsh(corr) >= 1.0)) == K


def test_bartlett_with_images_as_the_sample_size():
    """The textbook statistic with n independent samples; with fewer than (2p + 11)/6 the test
    says nothing (NaN), where n = pixels would have claimed p ~ 0."""
    x = _planted(5, n=400)
    r = np.corrcoef(x, rowvar=False)
    chi2, pval, dof = factor.bartlett_sphericity(r, 40)
    assert chi2 == pytest.approx(-(40 - 1 - (2 * P + 5) / 6) * np.linalg.slogdet(r)[1], rel=1e-12)
    assert dof == P * (P - 1) // 2 and pval < 1e-6
    chi2, pval, _ = factor.bartlett_sphericity(r, 12)  # 12 - 1 - 69/6 < 0
    assert np.isnan(chi2) and np.isnan(pval)
