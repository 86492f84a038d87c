"""U-Net layer (depth) pruning as a planning step: level redundancy from the statistics' PCA
counts (oracle: scikit-learn's PCA of the same data), levels removed from the deepest, and the
CLI's `fastprune levels`."""
import types

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import fastprune
from fastprune.models import UNet, level_layers
from fastprune.planning.depth import level_redundancy, levels_to_remove

from _cli_run import DATA, build_run, cli, one_line_error


def _factors(rng, c, k, n=4000, noise=0.05):
    z = rng.normal(size=(n, k))
    return z @ rng.normal(size=(k, c)) + noise * rng.normal(size=(n, c))


@pytest.fixture(scope="module")
def unet_stats():
    torch.manual_seed(0)
    m = UNet(3, 2, 4, 3).eval()
    stats = fastprune.collect(m, [torch.rand(2, 3, 16, 16)], influence=False, progress=False)
    return m, stats


def _planted(m, stats, rng, deep):
    """Replace each layer's covariance: levels in `deep` nearly rank one, the others independent."""
    layers = level_layers(m)
    data = {}
    for d, names in layers.items():
        for name in names:
            gid = stats.group_of(name)
            c = stats.group(gid).channels
            x = _factors(rng, c, 1) if d in deep else rng.normal(size=(4000, c))
            stats.moments[gid] = types.SimpleNamespace(cov=torch.from_numpy(np.cov(x, rowvar=False)))
            data[name] = x
    return layers, data


def test_level_redundancy_is_the_pca_count_and_the_deepest_go(unet_stats):
    m, stats = unet_stats
    rng = np.random.default_rng(0)
    layers, data = _planted(m, stats, rng, deep={2, 3})
    scores = level_redundancy(m, stats, layers, tau=0.95)
    for d, names in layers.items():  # oracle: sklearn PCA of the standardised data
        num = den = 0
        for name in names:
            x = data[name]
            ratios = PCA().fit((x - x.mean(0)) / x.std(0)).explained_variance_ratio_
            k = int(np.searchsorted(np.cumsum(ratios), 0.95 - 1e-12) + 1)
            num += (1 - k / x.shape[1]) * x.shape[1]
            den += x.shape[1]
        assert scores[d] == pytest.approx(num / den)
    assert scores[3] > 0.8 and scores[2] > 0.8 and scores[1] < 0.2
    assert levels_to_remove(m, stats, layers, threshold=0.75)[0] == 2
    assert levels_to_remove(m, stats, layers, threshold=0.75, min_depth=2)[0] == 1
    assert levels_to_remove(m, stats, layers, threshold=0.95)[0] == 0
    with pytest.raises(ValueError, match="threshold"):
        levels_to_remove(m, stats, layers, threshold=1.5)


def test_cli_levels_writes_a_shallower_unet(tmp_path, capsys):
    run = build_run(tmp_path / "run")
    code, out = cli("levels", run / "s.fps", "--threshold", "0", "--min-depth", "0", "--out", tmp_path / "lv",
                    capsys=capsys)
    assert code == 0 and "removes 1 of 1 levels" in str(out)
    code, out = cli("evaluate", "--model", tmp_path / "lv", "--data", DATA, capsys=capsys)
    assert code == 0
    code, out = cli("levels", run / "s.fps", "--threshold", "2", "--out", tmp_path / "bad", capsys=capsys)
    one_line_error(code, out, "threshold")
