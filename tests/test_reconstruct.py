"""Subset selection and reconstruction against independent oracles: numpy.linalg.lstsq on
materialised activations, exhaustive subset search, exact linear dependence between channels."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from fastprune.criteria import GroupContext, get
from fastprune.criteria.subset import greedy_order
from fastprune.planning import Ratio
from fastprune.planning import plan as make_plan
from fastprune.planning.plan import Plan
from fastprune.stats.collect import collect
from fastprune.surgery import prune
from fastprune.surgery.reconstruct import fold_weight, prune_reconstructed, refit_weight
from fastprune.train.recalibrate import recalibrate_batchnorm

from _models import batches, small_cnn


def _residual(x: np.ndarray, y: np.ndarray, keep) -> float:
    """Unexplained fraction of y by a least-squares fit on the columns `keep` of x (the oracle)."""
    if not keep:
        return 1.0
    sol = np.linalg.lstsq(x[:, list(keep)], y, rcond=None)[0]
    return float(((y - x[:, list(keep)] @ sol) ** 2).sum() / (y ** 2).sum())


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_greedy_first_pick_is_the_exhaustive_best_and_residuals_match_lstsq(c, o, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, c)) @ rng.normal(size=(c, c))
    w = rng.normal(size=(o, c))
    y = x @ w.T
    order, residual = greedy_order([(x.T @ x, w)], c, 1)
    best = min(range(c), key=lambda j: _residual(x, y, [j]))
    assert np.isclose(_residual(x, y, [order[0]]), _residual(x, y, [best]), rtol=1e-9, atol=1e-12)
    for k in range(c):  # the reported residual before pick k is lstsq's residual of the first k
        assert residual[k] == pytest.approx(_residual(x, y, order[:k]), rel=1e-6, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 7), st.sampled_from([1, 2, 4, 9]), st.integers(1, 3), st.integers(0, 10_000))
def test_greedy_blocks_over_several_consumers_match_lstsq(c, taps, consumers, seed):
    """Blocks of `taps` columns per channel, several consumers of one input: the residual before
    each pick is the mean over consumers of lstsq's unexplained fraction on the picked blocks, and
    each pick is the best next block (checked by trying every remaining channel)."""
    rng = np.random.default_rng(seed)
    n = c * taps
    x = rng.normal(size=(40 + 3 * n, n)) @ rng.normal(size=(n, n))
    ws = [rng.normal(size=(int(rng.integers(1, 4)), n)) for _ in range(consumers)]
    order, residual = greedy_order([(x.T @ x, w) for w in ws], c, taps)
    assert sorted(order) == list(range(c))

    def mean_residual(picked):
        cols = [j * taps + t for j in picked for t in range(taps)]
        return float(np.mean([_residual(x, x @ w.T, cols) for w in ws]))

    for k in range(c):
        assert residual[k] == pytest.approx(mean_residual(order[:k]), rel=1e-6, abs=1e-9)
        after = mean_residual(order[: k + 1])
        assert all(after <= mean_residual(order[:k] + [j]) + 1e-9 for j in range(c) if j not in order[:k])


def test_greedy_finds_the_exhaustive_optimum_on_planted_generators():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(200, 3))
    x = np.concatenate([base, base @ rng.normal(size=(3, 4)) + 1e-3 * rng.normal(size=(200, 4))], axis=1)
    w = rng.normal(size=(2, 7))
    y = x @ w.T
    order, _ = greedy_order([(x.T @ x, w)], 7, 1)
    exhaustive = min(itertools.combinations(range(7), 3), key=lambda k: _residual(x, y, k))
    assert _residual(x, y, order[:3]) == pytest.approx(_residual(x, y, exhaustive), abs=1e-6)
    assert _residual(x, y, order[:3]) < 1e-5


def test_patch_gram_selection_and_refit_match_lstsq_on_unfolded_patches():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 9, dtype=torch.float64)
    x[:, 4] = 0.7 * x[:, 0] - 0.2 * x[:, 1]
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    p = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 45).numpy()  # rows: positions, cols: (c, tap)
    y = p @ w.reshape(4, 45).numpy().T
    gram = p.T @ p
    keep = [0, 2, 3]
    cols = [c * 9 + t for c in keep for t in range(9)]
    oracle = np.linalg.lstsq(p[:, cols], y, rcond=None)[0].T.reshape(4, 3, 3, 3)
    np.testing.assert_allclose(refit_weight(gram, w.numpy(), keep), oracle, rtol=1e-6, atol=1e-8)
    order, residual = greedy_order([(gram, w.reshape(4, 45).numpy())], 5, 9)
    for k in range(1, 5):
        cols = [c * 9 + t for c in order[:k] for t in range(9)]
        assert residual[k] == pytest.approx(_residual(p, y, cols), rel=1e-6, abs=1e-9)
    assert residual[4] == pytest.approx(0.0, abs=1e-9)  # channel 4 is a combination of 0 and 1


@pytest.mark.parametrize("scale", [0.0, 1e-12])
def test_refit_on_nearly_dead_kept_channels_stays_bounded(scale):
    """Kept channels with (almost) no energy, removed ones alive: least squares has nothing to
    build on, so the refit weights must stay small and finite. With the ridge scaled by the kept
    channels' own energy they came out as NaN (scale 0) or ~1e6 times the original weights."""
    rng = np.random.default_rng(0)
    alive = rng.standard_normal((5000, 6))
    x = np.concatenate([scale * rng.standard_normal((5000, 2)), alive], axis=1)  # channels 0, 1 kept
    gram = x.T @ x  # 1 x 1 taps: the patch Gram is the channel Gram
    w = rng.standard_normal((3, 8, 1, 1))
    new = refit_weight(gram, w, [0, 1])
    assert np.isfinite(new).all() and np.abs(new).max() <= 10 * np.abs(w).max()
    healthy = refit_weight(gram, w, [2, 3])  # the oracle: plain least squares on live channels
    oracle = np.linalg.lstsq(x[:, [2, 3]], x @ w[:, :, 0, 0].T, rcond=None)[0].T
    np.testing.assert_allclose(healthy[:, :, 0, 0], oracle, rtol=1e-6, atol=1e-8)


def test_fold_is_exact_for_an_affine_combination_of_kept_channels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 4))
    x[:, 3] = 2.0 * x[:, 0] - x[:, 2] + 0.5
    w = rng.normal(size=(3, 4, 1, 1))
    new, offset = fold_weight(np.cov(x.T), x.mean(0), w, [0, 1, 2])
    np.testing.assert_allclose(x @ new.reshape(3, 4).T + offset, x @ w.reshape(3, 4).T, atol=1e-9)
    assert np.all(new[:, 3] == 0)


def _twin_model() -> nn.Module:
    """small_cnn whose second conv's filter 5 duplicates filter 2 (same norm parameters): after
    batch norm and ReLU channel 5 equals channel 2 exactly, so removing it loses nothing."""
    m = small_cnn()
    conv, bn = m[3], m[4]
    with torch.no_grad():
        conv.weight[5] = conv.weight[2]
        conv.bias[5] = conv.bias[2]
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t[5] = t[2]
    return m.eval()


@pytest.mark.parametrize("mode", ["fold", "refit"])
def test_removing_a_duplicate_channel_with_reconstruction_is_exact(mode):
    model = _twin_model()
    data = batches(4, size=16)
    stats = collect(model, data, patch_gram=True, progress=False)
    example = data[0][:1]
    plan = Plan(keep={"3": [i for i in range(16) if i != 5]}, channels={"3": 16})
    pruned = prune_reconstructed(model, plan, stats, example, mode=mode)
    plain = prune(model, plan, example)
    with torch.no_grad():
        ref, out, bad = model(data[1]), pruned(data[1]), plain(data[1])
    assert pruned[3].out_channels == 15
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert (bad - ref).abs().max() > 1e-2  # without reconstruction the channel's share is lost


def test_subset_criterion_plans_and_needs_the_patch_gram():
    model = _twin_model()
    data = batches(4, size=16)
    stats = collect(model, data, patch_gram=True, progress=False)
    p = make_plan(model, stats, "subset", Ratio(0.25), example_inputs=data[0][:1])
    assert len(p.keep["3"]) == 12
    s = get("subset").scores(GroupContext(model, stats, stats.group_of("3")))
    assert s[5] < np.sort(s)[-1] or s[2] < np.sort(s)[-1]
    no_gram = collect(model, data, progress=False)
    with pytest.raises(ValueError, match="patch_gram=True"):
        make_plan(model, no_gram, "subset", Ratio(0.25), example_inputs=data[0][:1])
    assert len(make_plan(model, no_gram, "subset_cov", Ratio(0.25), example_inputs=data[0][:1]).keep["3"]) == 12


def test_recalibrated_batchnorm_equals_the_data_statistics():
    model = small_cnn().eval()
    data = batches(3, size=8)
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)
        model[1].running_var.fill_(9.0)
    assert recalibrate_batchnorm(model, data) == 3
    feats = torch.cat([model[0](x) for x in data]).detach()
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    # per-batch unbiased variances averaged (what BatchNorm's cumulative average holds)
    var = torch.stack([model[0](x).detach().var((0, 2, 3), unbiased=True) for x in data]).mean(0)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-5, atol=1e-6)
    assert not model.training
