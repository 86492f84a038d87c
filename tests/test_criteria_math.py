"""Oracles for the covariance algebra behind the criteria: scikit-learn on raw data,
direct regressions, and planted latent structure."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.decomposition import PCA, FactorAnalysis
from sklearn.linear_model import LinearRegression

from fastprune.criteria import factor, linalg


def _data(rng, n=4000, p=12, k=3):
    z = rng.standard_normal((n, k))
    a = rng.standard_normal((k, p)) * rng.uniform(0.5, 3.0, size=(1, p))
    return z @ a + rng.standard_normal((n, p)) * rng.uniform(0.2, 1.0, size=p) + rng.uniform(-5, 5, size=p)


def _planted(rng, n=20000, p=64, k=8, noise=0.1, cross=0.15, scales=None):
    """p channels in k clusters: channel j mostly follows factor j // (p // k)."""
    z = rng.standard_normal((n, k))
    a = cross * rng.standard_normal((k, p))
    for j in range(p):
        a[j // (p // k), j] = rng.uniform(0.8, 1.2)
    x = z @ a + noise * rng.standard_normal((n, p))
    if scales is not None:
        x *= scales
    return x, a


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 20))
def test_pca_explained_variance_equals_sklearn(seed, p):
    rng = np.random.default_rng(seed)
    x = _data(rng, n=500, p=p, k=min(3, p))
    cov = np.cov(x, rowvar=False)
    ref = PCA().fit(x)
    np.testing.assert_allclose(linalg.eigenvalues(cov), ref.explained_variance_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(linalg.explained_variance_ratio(cov), ref.explained_variance_ratio_, rtol=1e-9, atol=1e-12)
    # the correlation matrix's PCA is sklearn's PCA of standardised data
    xs = (x - x.mean(0)) / x.std(0, ddof=1)
    ref_s = PCA().fit(xs)
    np.testing.assert_allclose(linalg.explained_variance_ratio(linalg.correlation(cov)), ref_s.explained_variance_ratio_, rtol=1e-9, atol=1e-12)


def test_components_for_variance_matches_cumulative_sum():
    rng = np.random.default_rng(1)
    x = _data(rng, p=10)
    ratio = PCA().fit(x).explained_variance_ratio_
    for tau in (0.5, 0.8, 0.9, 0.99, 1.0):
        k = linalg.components_for_variance(np.cov(x, rowvar=False), tau)
        assert np.cumsum(ratio)[k - 1] >= tau - 1e-9
        assert k == 1 or np.cumsum(ratio)[k - 2] < tau
    with pytest.raises(ValueError, match="tau"):
        linalg.components_for_variance(np.eye(3), 1.5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 14), st.data())
def test_retained_variance_equals_direct_regression(seed, p, data):
    rng = np.random.default_rng(seed)
    x = _data(rng, n=800, p=p)
    keep = data.draw(st.lists(st.integers(0, p - 1), min_size=1, max_size=p, unique=True))
    reg = LinearRegression().fit(x[:, keep], x)
    resid = x - reg.predict(x[:, keep])
    direct = 1.0 - resid.var(0, ddof=1).sum() / x.var(0, ddof=1).sum()
    assert linalg.retained_variance(np.cov(x, rowvar=False), keep) == pytest.approx(direct, rel=1e-8, abs=1e-10)


def test_retained_variance_edge_cases():
    s = np.diag([4.0, 1.0, 0.0])
    assert linalg.retained_variance(s, []) == 0.0
    assert linalg.retained_variance(s, [0, 1, 2]) == pytest.approx(1.0)
    assert linalg.retained_variance(s, [0, 2]) == pytest.approx(0.8)  # the dead channel adds nothing
    with pytest.raises(ValueError, match="square"):
        linalg.retained_variance(np.ones((2, 3)), [0])


def _match_up_to_sign_order(a, b):
    """Max abs difference between loading matrices after matching columns (sign and order)."""
    k = a.shape[1]
    used, worst = set(), 0.0
    for j in range(k):
        best = min(((min(np.abs(a[:, j] - b[:, i]).max(), np.abs(a[:, j] + b[:, i]).max()), i)
                    for i in range(k) if i not in used))
        used.add(best[1])
        worst = max(worst, best[0])
    return worst


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 4)])
def test_ml_factor_analysis_varimax_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    x = _data(rng, n=3000, p=10, k=k)
    xs = (x - x.mean(0)) / x.std(0)  # standardised: its covariance (ddof=0) is the correlation
    ref = FactorAnalysis(n_components=k, rotation="varimax", svd_method="lapack", tol=1e-8, max_iter=5000).fit(xs)
    fit = factor.ml_factor_analysis(linalg.correlation(np.cov(x, rowvar=False)), k, tol=1e-8, max_iter=5000, n_samples=len(x))
    # both maximise the same log-likelihood of the 3000 samples; ours is never the lower one
    assert fit.loglike >= ref.loglike_[-1] - 1e-6
    if ref.n_iter_ >= 5000:  # scikit-learn's plain iteration stopped at its cap (seed 2): likelihood only
        return
    np.testing.assert_allclose(fit.noise_variance, ref.noise_variance_, atol=1e-4)
    ours = factor.varimax(fit.loadings)
    # tolerance: both stop when the log-likelihood of the 3000 samples changes by < 1e-8; loadings agree to 1e-3
    assert _match_up_to_sign_order(ours, ref.components_.T) < 1e-3
    np.testing.assert_allclose(np.sum(ours**2, 1), 1 - fit.noise_variance, atol=1e-3)  # communalities


def test_varimax_is_a_rotation_and_increases_the_criterion():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((12, 3))
    b = factor.varimax(a)
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=1e-10)  # orthogonal rotation
    crit = lambda m: np.sum(np.var(m**2, axis=0))
    assert crit(b) >= crit(a)


def test_kmo_and_bartlett_against_textbook_formulas():
    rng = np.random.default_rng(4)
    x = _data(rng, n=600, p=6, k=2)
    r = np.corrcoef(x, rowvar=False)
    inv = np.linalg.inv(r)
    part = -inv / np.sqrt(np.outer(np.diag(inv), np.diag(inv)))
    off = ~np.eye(6, dtype=bool)
    want = (r[off] ** 2).sum() / ((r[off] ** 2).sum() + (part[off] ** 2).sum())
    overall, each = factor.kmo(np.cov(x, rowvar=False))
    assert overall == pytest.approx(want, rel=1e-10)
    assert each.shape == (6,) and np.all((each > 0) & (each < 1))
    chi2, pval, dof = factor.bartlett_sphericity(r, 600)
    assert dof == 15
    assert chi2 == pytest.approx(-(599 - 17 / 6) * np.log(np.linalg.det(r)), rel=1e-10)
    assert pval < 1e-10
    # independent channels: sphericity is not rejected
    chi2, pval, _ = factor.bartlett_sphericity(np.corrcoef(rng.standard_normal((600, 6)), rowvar=False), 600)
    assert pval > 1e-3


def test_factor_count_rules_on_planted_structure():
    rng = np.random.default_rng(5)
    x, _ = _planted(rng)
    r = linalg.correlation(np.cov(x, rowvar=False))
    assert factor.kaiser_count(r) == 8
    assert factor.se_scree_count(r) == 8
    assert abs(factor.factor_count(r, "variance", tau=0.95) - 8) <= 1
    with pytest.raises(ValueError, match="unknown factor-count rule"):
        factor.factor_count(r, "elbow")
    with pytest.raises(ValueError, match="tau"):
        factor.factor_count(r, "variance")


def test_planted_structure_pca_lfa_and_retained_variance():
    rng = np.random.default_rng(6)
    scales = np.ones(64)
    scales[:8] = 4.0  # one loud cluster: an L1/magnitude ranking takes all of it first
    x, _ = _planted(rng, scales=scales)
    cov = np.cov(x, rowvar=False)
    k = linalg.components_for_variance(linalg.correlation(cov), 0.95)
    assert abs(k - 8) <= 1
    res = factor.lfa(cov, rule="kaiser", n_samples=len(x))
    assert len(res.keep) == 8
    assert sorted(j // 8 for j in res.keep) == list(range(8))  # one channel per latent factor
    assert res.bartlett[1] < 1e-10 and 0 < res.kmo <= 1
    assert res.communalities.shape == (64,) and np.all(res.communalities > 0.5)
    l1 = np.argsort(-np.abs(x).mean(0))[:8]
    rand = [rng.choice(64, 8, replace=False) for _ in range(20)]
    corr = linalg.correlation(cov)
    for s, margin in ((cov, 0.0), (corr, 0.05)):  # raw and standardised channels
        rv_lfa = linalg.retained_variance(s, res.keep)
        assert rv_lfa > linalg.retained_variance(s, l1) + margin
        assert rv_lfa > max(linalg.retained_variance(s, r) for r in rand)
        assert rv_lfa > 0.9


def test_assign_one_to_one_never_reuses_a_filter():
    a = np.array([[0.95, 0.6], [0.5, 0.1], [0.0, 0.5]])  # factor 0 is stronger and picks first
    assert sorted(factor.assign_one_to_one(a)) == [0, 2]
    with pytest.raises(ValueError, match="one-to-one"):
        factor.assign_one_to_one(np.ones((2, 3)))


def test_ml_fit_keeps_to_its_budget_and_says_whether_it_settled():
    rng = np.random.default_rng(5)
    r = linalg.correlation(np.cov(_data(rng, n=400, p=12, k=3), rowvar=False))
    full = factor.ml_factor_analysis(r, 3, tol=1e-10, max_iter=5000)
    assert full.converged and full.n_iter < 5000
    for budget in (2, 3, 6, 11):
        cut = factor.ml_factor_analysis(r, 3, tol=1e-10, max_iter=budget)
        assert cut.n_iter <= budget and not cut.converged
        assert cut.loglike <= full.loglike + 1e-12  # SQUAREM never lowers the likelihood


def test_lfa_criterion_iterations_option():
    from fastprune.criteria import get
    assert get("lfa").options.iterations == 100
    assert get("lfa", iterations=7).options.iterations == 7
    for bad in (1, 0, 2.5, True, "100"):
        with pytest.raises(ValueError, match="iterations"):
            get("lfa", iterations=bad)
