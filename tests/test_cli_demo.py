"""The demo job on a tiny configuration: every step runs, the report and summary.json are
written with the contract keys, the closing table shows every model, the figures are drawn."""
from __future__ import annotations

import json

import pytest

for _mod in ("fastprune.models", "fastprune.train", "fastprune.surgery", "fastprune.stats.collect",
             "fastprune.stats.influence", "fastprune.criteria", "fastprune.planning.planner"):
    pytest.importorskip(_mod)

from fastprune.cli.job import DemoConfig, classifier_input, closing_table, run_demo  # noqa: E402


@pytest.mark.slow
def test_tiny_demo_writes_report(tmp_path):
    cfg = DemoConfig(model="unet:base_width=4,depth=2,upsample=bilinear", train="synthetic:n=8,size=64,seed=0",
                     val="synthetic:n=4,size=64,seed=1", test="synthetic:n=4,size=64,seed=2", epochs=1,
                     stats_batches=1, finetune_epochs=1, latency_size=64, latency_repeats=2, latency_warmup=1,
                     samples=2)
    lines = []
    summ = run_demo(tmp_path, cfg, log=lines.append)
    rep = tmp_path / "report"
    assert json.loads((rep / "summary.json").read_text()) == json.loads(json.dumps(summ))
    assert set(summ) == {"baseline", "pca_nci", "lfa"}
    for entry in summ.values():
        for k in ("params", "macs", "latency_ms", "iou", "miou", "pixel_accuracy"):
            assert isinstance(entry[k], (int, float))
    for m in ("pca_nci", "lfa"):
        assert summ[m]["params"] < summ["baseline"]["params"]
        assert (tmp_path / m / "fastprune-model.json").is_file() and (tmp_path / "plans" / f"{m}.json").is_file()
    assert (tmp_path / "stats.fps").is_file() and (tmp_path / "baseline" / "weights.safetensors").is_file()
    assert json.loads((tmp_path / "fastprune-demo.json").read_text())["format"] == "fastprune.demo"
    for png in ("models.png", "channels.png", "retained_variance.png", "cost.png", "spectra.png", "samples.png"):
        assert (rep / png).stat().st_size > 1000, png
    table = "\n".join(lines)
    assert "unpruned" in table and "pca_nci" in table and "lfa" in table
    meta = json.loads((rep / "meta.json").read_text())
    assert meta["seconds"]["total"] > 0 and meta["torch_threads"] >= 1


def test_closing_table_shows_changes():
    summ = {"baseline": {"params": 1000, "macs": 2000, "latency_ms": 5.0, "iou": 0.8, "miou": 0.85, "pixel_accuracy": 0.9},
            "lfa": {"params": 400, "macs": 900, "latency_ms": 2.5, "iou": 0.795, "miou": 0.84, "pixel_accuracy": 0.89,
                    "params_reduction": 0.6, "macs_reduction": 0.55, "iou_change": -0.005}}
    t = closing_table(summ)
    assert "-60.0%" in t and "-55.0%" in t and "-0.50" in t and "unpruned" in t


def test_classifier_input_is_the_last_but_one_conv():
    from fastprune.models import create

    assert classifier_input(create("unet", base_width=4, depth=2, upsample="bilinear")) == ["ups.1.conv.3"]
