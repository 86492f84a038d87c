"""He et al. 2017's channel selection: the λ at which the LASSO keeps exactly k channels, checked
against scikit-learn's `Lasso` on the explicit contributions; the least-squares refit of the
consumer against `numpy.linalg.lstsq` on explicit im2col patches."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from sklearn.linear_model import Lasso

from fastprune.criteria.lasso import lasso_path_scores
from fastprune.criteria.lasso_solve import path_entries, select_k, solve


def _contributions(rng, n=300, c=12, corr=0.4):
    """Columns Z_c (n samples each) with correlated channels and varied scales; Y = Σ_c Z_c."""
    mix = np.eye(c) + corr * rng.standard_normal((c, c)) / np.sqrt(c)
    z = rng.standard_normal((n, c)) @ mix * rng.uniform(0.2, 3.0, c)
    return z, z.sum(1)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(4, 14), st.data())
def test_exactly_k_channels_equal_sklearn_lasso_at_that_lambda(seed, c, data):
    rng = np.random.default_rng(seed)
    z, y = _contributions(rng, c=c)
    k = data.draw(st.integers(1, c - 1))
    sel = select_k(z.T @ z, k)
    assert len(sel.keep) == k
    ref = Lasso(alpha=sel.lam / len(y), fit_intercept=False, tol=1e-14, max_iter=10**6).fit(z, y).coef_
    if sel.exact:
        assert np.count_nonzero(sel.beta) == k and np.flatnonzero(ref).tolist() == sel.keep
    scale = np.abs(ref).max()
    np.testing.assert_allclose(sel.beta, ref, rtol=0, atol=1e-7 * scale)


def test_solve_is_sklearn_on_the_quadratic_form():
    rng = np.random.default_rng(1)
    z, y = _contributions(rng, n=500, c=10)
    q, b = z.T @ z, z.T @ y
    for lam in (1.0, 30.0, 0.3 * np.abs(b).max()):
        ours = solve(q, b, lam)
        ref = Lasso(alpha=lam / len(y), fit_intercept=False, tol=1e-14, max_iter=10**6).fit(z, y).coef_
        np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
    assert not solve(q, b, np.abs(b).max() * 1.0001).any()  # above λ_max nothing is left


def test_dead_and_duplicated_channels():
    """A dead channel (Q_cc = 0) is never chosen while live ones remain; of two identical
    channels (a LASSO with many solutions) one is kept and carries the weight of both."""
    rng = np.random.default_rng(2)
    z, _ = _contributions(rng, c=6)
    z[:, 2] = 0.0
    sel = select_k(z.T @ z, 5)
    assert sel.keep == [0, 1, 3, 4, 5]
    twin = np.stack([z[:, 0], z[:, 0]], 1)
    sel = select_k(twin.T @ twin, 1)
    assert len(sel.keep) == 1 and sel.beta.sum() == pytest.approx(2.0, rel=1e-3)
    with pytest.raises(ValueError, match="1 <= k"):
        select_k(np.eye(3), 4)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 14), st.floats(0.0, 1.5))
@example(20, 10, 1.5)  # a channel leaves the path at a smaller lambda
def test_path_entries_equal_the_support_of_each_solve_on_the_grid(seed, c, corr):
    """The exact path's entry λ of every channel equals, on the grid, the largest λ at which
    coordinate descent (`solve`, scikit-learn's Lasso above) has it non-zero; channels that leave
    and re-enter (strong correlations) included, a dead channel never enters."""
    rng = np.random.default_rng(seed)
    z, _ = _contributions(rng, c=c, corr=corr)
    z[:, c - 1] = 0.0
    q = z.T @ z
    b = q.sum(1)
    live = np.diag(q) > 0
    lams = np.abs(b[live]).max() * np.geomspace(1.0, 1e-4, 40)
    want = np.zeros(c)
    beta = np.zeros(c)
    for lam in lams:
        beta = solve(q, b, lam, beta=beta, tol=1e-14)
        want[(beta != 0) & (want == 0)] = lam
    np.testing.assert_array_equal(path_entries(q, b, lams, live), want)
    s = lasso_path_scores(q, n_lambdas=40)
    order = np.argsort(-s[:c - 1], kind="stable")
    assert s[c - 1] < s[:c - 1].min() and np.all(np.diff(want[:c - 1][order]) <= 0)  # ranked by entry λ


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 8), st.sampled_from([1, 3]), st.data())
def test_refit_equals_lstsq_on_explicit_patches(seed, c, k, data):
    """The consumer's least-squares refit on the kept channels from the patch Gram equals
    numpy.linalg.lstsq on the explicit im2col patches (F.unfold's order: channel, then taps)."""
    import torch
    from torch.nn import functional as F

    from fastprune.surgery.reconstruct import refit_weight

    rng = np.random.default_rng(seed)
    keep = sorted(data.draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c - 1, unique=True)))
    x = torch.from_numpy(rng.standard_normal((3, c, 9, 9)) * rng.uniform(0.3, 3.0, (1, c, 1, 1)))
    w = rng.standard_normal((5, c, k, k))
    patches = F.unfold(x, k, padding=k // 2).transpose(1, 2).reshape(-1, c * k * k).numpy()
    y = patches @ w.reshape(5, -1).T
    cols = (np.asarray(keep)[:, None] * k * k + np.arange(k * k)[None, :]).ravel()
    sol, *_ = np.linalg.lstsq(patches[:, cols], y, rcond=None)
    want = sol.T.reshape(5, len(keep), k, k)
    got = refit_weight(patches.T @ patches, w, keep)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
