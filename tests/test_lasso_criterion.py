"""The `lasso` criterion selects as He et al. 2017 do: the channels left at the λ where exactly k
coefficients are non-zero. Oracle: scikit-learn's `Lasso`, with its own bisection of λ, on the
contributions Z_c built explicitly by running the consuming convolution on channel c of its
input alone (nothing from the patch Gram or `lasso_solve`). The fixed-path ranking stays as
`selection="path"`, reachable from `fastprune plan --selection`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from torch.nn import functional as F

import fastprune
from fastprune.criteria import GroupContext, get, top_k
from fastprune.planning import compose, plan
from _cli_run import cli
from _models import Planted, planted_batches


@pytest.fixture(scope="module")
def planted():
    """The planted model (64 channels of `mix`, mixtures of 8 latents, read by the 3x3 `head`),
    its statistics with the patch Gram, and the explicit contributions Z (rows: every output
    element of `head` over the data; column c: head(mix output with only channel c), no bias)."""
    model = Planted(seed=0).eval()
    data = planted_batches(n=2, size=16)
    stats = fastprune.collect(model, data, patch_gram=True, progress=False)
    with torch.no_grad():
        h = torch.cat([model.mix(x) for x in data]).double()
        w = model.head.weight.detach().double()
        z = torch.stack([F.conv2d(h[:, c:c + 1], w[:, c:c + 1], padding=1).reshape(-1) for c in range(h.shape[1])],
                        1).numpy()
    return model, stats, z


def sklearn_support(z: np.ndarray, k: int, iters: int = 200) -> list[int]:
    """The non-zero coefficients of sklearn's Lasso (no intercept) on Y = sum_c Z_c at an alpha
    with exactly k of them, found by bisecting log alpha."""
    y = z.sum(1)
    top = np.log(np.abs(z.T @ y).max() / len(y))
    lo, hi = top - 25.0, top
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        coef = Lasso(alpha=np.exp(mid), fit_intercept=False, tol=1e-12, max_iter=10**6).fit(z, y).coef_
        n = np.count_nonzero(coef)
        if n == k:
            return np.flatnonzero(coef).tolist()
        lo, hi = (mid, hi) if n > k else (lo, mid)
    raise AssertionError(f"no alpha with exactly {k} non-zeros")


@pytest.mark.parametrize("k", [4, 8, 16, 24, 32, 48])
def test_selection_is_sklearn_lasso_support_at_k_nonzeros(planted, k):
    model, stats, z = planted
    ctx = GroupContext(model, stats, stats.group_of("mix"))
    crit = get("lasso")
    assert crit.options.selection == "exact"  # the default
    assert crit.select(ctx, k) == sklearn_support(z, k)
    info = crit.info(ctx, crit.select(ctx, k))
    assert info["selection"] == "exact" and info["exact_k"] is True and info["lambda"] > 0


def test_the_planner_keeps_the_exact_selection(planted):
    model, stats, z = planted
    crit, rule, bounds = compose("lasso", ratio=0.75)
    p = plan(model, stats, crit, rule, bounds=bounds)
    assert p.keep["mix"] == sklearn_support(z, 16)
    assert p.layers["mix"]["criterion_selection"] == "exact"


def test_path_option_ranks_by_entry_on_the_fixed_path(planted):
    """selection="path" keeps the top k of the path scores; on this data it differs from the
    exact-k selection at some k (the path ranking is not He et al.'s selection)."""
    model, stats, _ = planted
    ctx = GroupContext(model, stats, stats.group_of("mix"))
    path, exact = get("lasso", selection="path"), get("lasso")
    differs = 0
    for k in (8, 16, 24, 32):
        assert path.select(ctx, k) == top_k(path.scores(ctx), k)
        differs += path.select(ctx, k) != exact.select(ctx, k)
    assert differs > 0
    assert path.info(ctx, path.select(ctx, 8)) == {"selection": "path"}
    np.testing.assert_array_equal(path.scores(ctx), exact.scores(ctx))  # one score for global budgets
    with pytest.raises(ValueError, match="lasso selection must be one of exact, path"):
        get("lasso", selection="greedy")


def test_selection_on_the_command_line(tmp_path, capsys):
    """`fastprune plan --method lasso [--selection exact|path]`: each plan equals the criterion
    in process; --selection with a method that has no such option, or an unknown selection,
    is one clear error (one line, exit 2, nothing written)."""
    from fastprune.cli.artifacts import load_model, save_model
    from fastprune.stats.statistics import Statistics

    torch.manual_seed(0)
    save_model(tmp_path / "base", load_model("unet:base_width=4,depth=2"))
    code, _ = cli("score", "--model", tmp_path / "base", "--data", "synthetic:n=2,size=32", "--patch-gram",
                  "--out", tmp_path / "s.fps", capsys=capsys)
    assert code == 0
    model = load_model(str(tmp_path / "base")).model
    stats = Statistics.load(tmp_path / "s.fps", model)
    for extra, selection in (([], "exact"), (["--selection", "path"], "path"), (["--selection", "exact"], "exact")):
        out = tmp_path / f"{selection}{len(extra)}.json"
        code, _ = cli("plan", tmp_path / "s.fps", "--method", "lasso", "--ratio", "0.5", *extra, "--out", out,
                      capsys=capsys)
        assert code == 0
        doc = json.loads(out.read_text())
        crit = get("lasso", selection=selection)
        for name, rec in doc["layers"].items():
            ctx = GroupContext(model, stats, rec["group"])
            assert doc["keep"][name] == crit.select(ctx, len(doc["keep"][name])), (selection, name)
            assert rec["criterion_selection"] in (selection, "influence")
    for argv, words in ((["--method", "l1", "--selection", "path"], "no option selection"),
                        (["--method", "lasso", "--selection", "greedy"], "invalid choice")):
        code, out = cli("plan", tmp_path / "s.fps", *argv, "--ratio", "0.5", "--out", tmp_path / "bad.json",
                        capsys=capsys)
        assert code == 2 and words in out.err and len(out.err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.json").exists()
