"""The `Variance` rule's basis against scikit-learn's PCA on the materialised feature maps: the
covariance basis counts what `PCA(tau)` counts on raw maps, the correlation basis what it counts
on standardised maps, and channel scales between 0.2 and 5 make the two differ."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from fastprune.planning import Variance, compose, plan
from fastprune.stats.collect import collect


def _model_and_maps():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 4, 3, padding=1)).eval()
    with torch.no_grad():  # planted: 16 channels from 5 sources, scales 0.2 .. 5
        mix = torch.randn(16, 5) @ torch.randn(5, 3 * 9)
        m[0].weight.copy_((mix + 0.05 * torch.randn(16, 27)).reshape(16, 3, 3, 3))
        m[0].weight.mul_(torch.logspace(np.log10(0.2), np.log10(5), 16).reshape(16, 1, 1, 1))
    xs = [torch.randn(4, 3, 24, 24) for _ in range(3)]
    with torch.no_grad():
        maps = torch.cat([m[0](x) for x in xs]).permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
    return m, xs, maps


@pytest.mark.parametrize("tau", [0.8, 0.9, 0.95])
def test_variance_rule_counts_as_sklearn_in_both_bases(tau):
    m, xs, maps = _model_and_maps()
    stats = collect(m, xs)
    std = (maps - maps.mean(0)) / maps.std(0)
    want = {"covariance": PCA(tau, svd_solver="full").fit(maps).n_components_,
            "correlation": PCA(tau, svd_solver="full").fit(std).n_components_}
    got = {b: len(plan(m, stats, "l1", Variance(tau, b)).keep["0"]) for b in want}
    assert got == want
    crit, rule, _ = compose("pca_nci", variance=tau, basis="covariance")
    assert len(plan(m, stats, crit, rule).keep["0"]) == want["covariance"]


def test_the_bases_differ_on_scaled_channels_and_bad_bases_are_refused():
    m, xs, maps = _model_and_maps()
    stats = collect(m, xs)
    counts = {b: len(plan(m, stats, "pca_nci", Variance(0.95, b)).keep["0"]) for b in ("correlation", "covariance")}
    assert counts["correlation"] > counts["covariance"]
    with pytest.raises(ValueError, match="basis"):
        Variance(0.9, "spearman")
    with pytest.raises(ValueError, match="basis"):
        compose("l1", ratio=0.5, basis="covariance")
    assert compose("l1", variance=0.9, basis="covariance")[1] == Variance(0.9, "covariance")
