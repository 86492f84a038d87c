"""The command line reaches every result the demo shows: the demo on a tiny configuration, then
the same job as `fastprune` commands (train with keep-best, score, plan with the classifier
input excluded, prune, fine-tune distilled from the unpruned model with keep-best, evaluate),
must give the same weights, plans and metrics."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from graph_util import one_thread
from fastprune.cli.job import DemoConfig, classifier_input, run_demo
from fastprune.cli.main import main
from fastprune.models import create

_threads = pytest.fixture(autouse=True)(one_thread)  # one thread: both runs compute in the same order


def _cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.mark.slow
def test_cli_reproduces_the_demo(tmp_path):
    spec = "unet:base_width=4,depth=2,upsample=bilinear"
    train, val, test = "synthetic:n=8,size=64,seed=0", "synthetic:n=4,size=64,seed=1", "synthetic:n=4,size=64,seed=2"
    cfg = DemoConfig(model=spec, train=train, val=val, test=test, epochs=1, stats_batches=1, finetune_epochs=2,
                     methods={"pca_nci": {"variance": 0.9}}, latency_size=64, latency_repeats=1,
                     latency_warmup=1, samples=0)
    demo = run_demo(tmp_path / "demo", cfg, log=lambda _: None)
    exclude = classifier_input(create("unet", base_width=4, depth=2, upsample="bilinear"))

    d = tmp_path / "cli"
    _cli("finetune", "--model", spec, "--data", train, "--val-data", val, "--epochs", cfg.epochs, "--lr", cfg.lr,
         "--batch-size", cfg.batch_size, "--keep-best", cfg.keep_best, "--seed", cfg.seed, "--out", d / "base")
    a, b = load_file(tmp_path / "demo" / "baseline" / "weights.safetensors"), load_file(d / "base" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    _cli("score", "--model", d / "base", "--data", train, "--batch-size", cfg.batch_size,
         "--max-batches", cfg.stats_batches, "--out", d / "stats.fps")
    _cli("plan", d / "stats.fps", "--method", "pca_nci", "--variance", 0.9, "--exclude", *exclude,
         "--out", d / "pca_nci.json")
    ours = json.loads((d / "pca_nci.json").read_text())["keep"]
    theirs = json.loads((tmp_path / "demo" / "plans" / "pca_nci.json").read_text())["keep"]
    assert ours == theirs

    _cli("prune", "--model", d / "base", "--plan", d / "pca_nci.json", "--out", d / "pruned")
    _cli("evaluate", "--model", d / "pruned", "--data", test, "--out", d / "before.json")
    _cli("finetune", "--model", d / "pruned", "--teacher", d / "base", "--distill", cfg.distill, "--data", train,
         "--val-data", val, "--epochs", cfg.finetune_epochs, "--lr", cfg.finetune_lr, "--batch-size", cfg.batch_size,
         "--seed", cfg.seed, "--out", d / "ft")  # the demo's fine-tuning keeps its last epoch
    _cli("evaluate", "--model", d / "ft", "--data", test, "--out", d / "after.json")
    before, after = (json.loads((d / f).read_text()) for f in ("before.json", "after.json"))
    for k in ("iou", "miou", "pixel_accuracy"):
        assert before[k] == pytest.approx(demo["pca_nci"]["before_finetune"][k], abs=1e-12)
        assert after[k] == pytest.approx(demo["pca_nci"][k], abs=1e-12)
    assert after["params"] == demo["pca_nci"]["params"]
