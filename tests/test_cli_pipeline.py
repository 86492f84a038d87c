"""The CLI end to end on tiny synthetic inputs: finetune (train) -> score -> plan -> prune ->
evaluate -> finetune -> report, checking every file it writes against in-process oracles, and
the errors a user can cause along the way (one line, exit code 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

for _mod in ("fastprune.models", "fastprune.data", "fastprune.train", "fastprune.graph", "fastprune.surgery",
             "fastprune.stats.collect", "fastprune.stats.influence", "fastprune.criteria", "fastprune.planning.planner"):
    pytest.importorskip(_mod)

from fastprune.cli.artifacts import load_model  # noqa: E402
from _cli_run import cli

SPEC = "unet:base_width=4,depth=2,upsample=bilinear"
DATA = "synthetic:n=4,size=64,seed=3"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pass through the pipeline shared by the tests below."""
    d = tmp_path_factory.mktemp("cli")
    steps = [
        ("finetune", "--model", SPEC, "--data", "synthetic:n=8,size=64,seed=0", "--epochs", "1", "--batch-size", "4",
         "--out", str(d / "base")),
        ("score", "--model", str(d / "base"), "--data", DATA, "--batch-size", "2", "--out", str(d / "s.fps")),
        ("plan", str(d / "s.fps"), "--method", "l1", "--ratio", "0.5", "--out", str(d / "l1.json")),
        ("plan", str(d / "s.fps"), "--method", "pca_nci", "--variance", "0.9", "--out", str(d / "pca.json")),
        ("prune", "--model", SPEC, "--weights", str(d / "base" / "weights.safetensors"), "--plan", str(d / "l1.json"),
         "--out", str(d / "pruned")),
        ("evaluate", "--model", str(d / "pruned"), "--data", DATA, "--latency", "--out", str(d / "metrics.json")),
        ("finetune", "--model", str(d / "pruned"), "--data", DATA, "--val-data", DATA, "--epochs", "1",
         "--batch-size", "4", "--out", str(d / "ft")),
        ("report", "--model", str(d / "base"), "--pruned", str(d / "ft"), "--data", DATA, "--stats", str(d / "s.fps"),
         "--repeats", "2", "--input-size", "64", "--samples", "2", "--out", str(d / "report")),
    ]
    for argv in steps:
        code, _ = cli(*argv)
        assert code == 0, argv
    return d


def test_train_writes_a_model_folder(run):
    doc = json.loads((run / "base" / "fastprune-model.json").read_text())
    assert doc["spec"] == SPEC and doc["weights"] == "weights.safetensors"
    loaded = load_model(str(run / "base"))
    assert not loaded.pruned and loaded.spec.options["base_width"] == 4


def test_score_writes_statistics_of_the_model(run):
    from fastprune.stats.statistics import Statistics

    stats = Statistics.load(run / "s.fps")
    model = load_model(str(run / "base")).model
    stats.check_model(model, stats.example_inputs(model))  # raises if not this model
    assert stats.meta["model"]["spec"] == SPEC and stats.meta["data"] == DATA
    assert len(stats.groups) > 0


def test_plans_follow_their_rules(run):
    from fastprune.planning.plan import Plan

    l1 = Plan.load(run / "l1.json")
    assert l1.meta["method"] == "l1"
    for name, keep in l1.keep.items():
        if len(keep) < l1.channels[name]:
            assert len(keep) == pytest.approx(l1.channels[name] / 2, abs=1)
    # l1 keeps the filters with the largest L1 norms (oracle: the norms of the trained weights)
    model = load_model(str(run / "base")).model
    conv = dict(model.named_modules())["inc.0"]
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3)).numpy()
    if len(l1.keep["inc.0"]) < conv.out_channels:
        assert set(l1.keep["inc.0"]) == set(np.argsort(-norms)[:len(l1.keep["inc.0"])].tolist())
    pca = Plan.load(run / "pca.json")
    assert pca.meta["method"] == "pca_nci" and set(pca.keep) == set(l1.keep)


def test_pruned_folder_replays_the_plan(run):
    from fastprune.planning.plan import Plan
    from fastprune.surgery import prune

    loaded = load_model(str(run / "pruned"))
    assert loaded.pruned
    plan = Plan.load(run / "l1.json")
    base = load_model(str(run / "base")).model
    direct = prune(base, plan, torch.zeros(1, 3, 64, 64)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), direct(x))
    mods = dict(loaded.model.named_modules())
    for name, keep in plan.keep.items():
        assert mods[name].out_channels == len(keep)


def test_evaluate_matches_an_independent_count(run):
    from fastprune.data import open_dataset

    res = json.loads((run / "metrics.json").read_text())
    model = load_model(str(run / "pruned")).model.eval()
    data = open_dataset(DATA)
    inter = union = correct = total = 0
    with torch.no_grad():
        for i in range(len(data)):
            x, y = data[i]
            p = model(x[None]).argmax(1)[0]
            inter += int(((p == 1) & (y == 1)).sum())
            union += int(((p == 1) | (y == 1)).sum())
            correct += int((p == y).sum())
            total += y.numel()
    assert res["pixel_accuracy"] == pytest.approx(correct / total)
    if union:
        assert res["iou"] == pytest.approx(inter / union)
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert res["latency_ms"] > 0 and res["latency"]["repeats"] >= 1


def test_finetune_keeps_the_pruned_architecture(run):
    ft, pruned = load_model(str(run / "ft")), load_model(str(run / "pruned"))
    assert ft.pruned and ft.plan.keep == pruned.plan.keep
    assert [p.shape for p in ft.model.parameters()] == [p.shape for p in pruned.model.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(ft.model.parameters(), pruned.model.parameters()))
    doc = ft.doc
    assert set(doc["metrics_before_finetune"]) == {"iou", "miou", "pixel_accuracy"}


def test_report_files(run):
    rep = run / "report"
    summ = json.loads((rep / "summary.json").read_text())
    assert set(summ) == {"baseline", "l1"}
    for entry in summ.values():
        for k in ("params", "macs", "latency_ms", "iou", "miou", "pixel_accuracy"):
            assert k in entry
    assert summ["l1"]["params"] < summ["baseline"]["params"]
    assert summ["l1"]["before_finetune"]["iou"] == json.loads((run / "ft" / "fastprune-model.json").read_text())[
        "metrics_before_finetune"]["iou"]
    for png in ("models.png", "channels.png", "cost.png", "spectra.png", "samples.png"):
        assert (rep / png).stat().st_size > 1000
    assert "data:image/png;base64" in (rep / "index.html").read_text()


def _one_line_error(code, out, *words):
    assert code == 2
    assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err
    for w in words:
        assert w in out.err


def test_unknown_method_is_a_user_error(run, capsys):
    code, out = cli("plan", str(run / "s.fps"), "--method", "nosuch", "--out", str(run / "x.json"), capsys=capsys)
    _one_line_error(code, out, "nosuch")
    assert not (run / "x.json").exists()


def test_statistics_of_another_model_are_refused(run, capsys):
    code, out = cli("plan", str(run / "s.fps"), "--method", "l1", "--ratio", "0.5",
                    "--model", "unet:base_width=6,depth=2,upsample=bilinear", "--out", str(run / "x.json"), capsys=capsys)
    _one_line_error(code, out, "different model")


def test_plan_for_another_model_is_refused(run, capsys):
    code, out = cli("prune", "--model", "unet:base_width=8,depth=1,upsample=bilinear", "--plan", str(run / "l1.json"),
                    "--out", str(run / "bad"), capsys=capsys)
    assert code == 2 and len(out.err.strip().splitlines()) == 1
    assert not (run / "bad" / "fastprune-model.json").exists()


def test_not_a_statistics_file(run, capsys):
    bad = run / "bad.fps"
    bad.write_bytes(b"garbage")
    code, out = cli("plan", str(bad), "--method", "l1", "--out", str(run / "x.json"), capsys=capsys)
    _one_line_error(code, out)


def test_basis_on_the_command_line(run, capsys):
    """--basis reaches the PCA count: covariance counts equal scikit-learn-style counts of the
    covariance eigenvalues of the saved statistics, correlation the standardised ones; a basis
    that does not exist, or one with no use for the method and rule, is one clear error."""
    from fastprune.criteria.linalg import components_for_variance, correlation
    from fastprune.stats.statistics import Statistics

    stats = Statistics.load(run / "s.fps")
    for basis in ("correlation", "covariance"):
        out = run / f"pca-{basis}.json"
        code, _ = cli("plan", str(run / "s.fps"), "--method", "pca_nci", "--variance", "0.9", "--basis", basis,
                      "--out", str(out), capsys=capsys)
        assert code == 0
        layers = json.loads(out.read_text())["layers"]
        for rec in layers.values():
            cov = stats.moments[rec["group"]].cov.double().numpy()
            mat = correlation(cov) if basis == "correlation" else cov
            assert rec["kept"] == max(1, components_for_variance(mat, 0.9)), (basis, rec["group"])
    code, out = cli("plan", str(run / "s.fps"), "--method", "pca_nci", "--basis", "spearman",
                    "--out", str(run / "b.json"), capsys=capsys)
    _one_line_error(code, out, "--basis", "spearman")
    code, out = cli("plan", str(run / "s.fps"), "--method", "l1", "--ratio", "0.5", "--basis", "covariance",
                    "--out", str(run / "b.json"), capsys=capsys)
    _one_line_error(code, out, "basis")
    assert not (run / "b.json").exists()
