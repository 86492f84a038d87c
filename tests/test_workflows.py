"""compress and compare on a tiny U-Net: budgets reached, resumability, refusals, the report."""
import copy
import json
import re

import numpy as np
import pytest
import torch

from fastprune.data import open_dataset
from fastprune.graph.cost import count
from fastprune.models.unet import UNet
from fastprune.report.frontier import compare
from fastprune.stats.collect import collect
from fastprune.workflows import compress
from fastprune.workflows.compare import aggregate
from fastprune.workflows.allocate import budget_counts
from fastprune.workflows.compression import epochs_per_step, schedule

EXAMPLE = torch.zeros(1, 3, 16, 16)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=1, upsample="bilinear").eval()
    train = open_dataset("synthetic:n=8,size=16,seed=0")
    val = open_dataset("synthetic:n=4,size=16,seed=1")
    return model, train, val


def test_schedule_is_geometric_and_epochs_add_up():
    s = schedule(0.9, 3)
    assert s[-1] == pytest.approx(0.9)
    kept = [1 - x for x in s]
    assert kept[1] / kept[0] == pytest.approx(kept[0]) and kept[2] / kept[1] == pytest.approx(kept[0])
    assert epochs_per_step(8, 3) == [0, 0, 8]
    assert sum(epochs_per_step(8, 3, between=True)) == 8 and epochs_per_step(2, 3, between=True) == [0, 1, 1]


@pytest.mark.parametrize("allocation", ["redundancy", "marginal", "uniform"])
def test_budget_counts_reach_the_budget_and_refuse_the_unreachable(tiny, allocation):
    model, train, _ = tiny
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    stats = collect(model, loader, progress=False)
    counts, search = budget_counts(model, stats, 0.5, "macs", allocation, example_inputs=EXAMPLE)
    assert abs(search["reached"] - 0.5) <= 0.01  # within a point of the budget (planning's Budget)
    if allocation == "redundancy":
        assert 0 < search["knob"]["value"] <= 1
    with pytest.raises(ValueError, match="min_channels"):
        budget_counts(model, stats, 0.99, "macs", allocation, min_channels=3, example_inputs=EXAMPLE)


def _counting(monkeypatch):
    import fastprune.workflows.compression as mod
    calls = []
    real = mod.prune_layerwise

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(mod, "prune_layerwise", spy)
    return calls


def test_compress_reaches_the_budget_and_resumes(tiny, tmp_path, monkeypatch):
    model, train, val = tiny
    out = tmp_path / "run"
    kw = dict(target_macs=0.6, steps=2, finetune_epochs=1, stats_batches=2, batch_size=4, levels=False,
              progress=False)
    pruned, hist = compress(model, train, val, out=out, **kw)
    removed = 1 - count(pruned, EXAMPLE).macs / count(model, EXAMPLE).macs
    assert removed == pytest.approx(0.6, abs=0.05)
    assert [s["step"] for s in hist["steps"]] == [1, 2]
    assert (out / "step-1" / "stats.fps").is_file() and (out / "step-2" / "model" / "plan.json").is_file()
    # resume: every step is done; the same model comes back without pruning anything again
    calls = _counting(monkeypatch)
    again, hist2 = compress(model, train, val, out=out, **kw)
    assert calls == []
    assert json.dumps(hist2["steps"]) == json.dumps(hist["steps"])  # NaN metrics (no building pixels) compare equal
    for a, b in zip(pruned.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    # different arguments: refused, nothing overwritten
    state = (out / "compress.json").read_text()
    with pytest.raises(ValueError, match="different arguments: steps=2"):
        compress(model, train, val, out=out, **{**kw, "steps": 3})
    assert (out / "compress.json").read_text() == state
    doc = json.loads(state)  # a run an earlier version started (its fingerprint: 64 hex digits)
    doc["arguments"]["model"] = "0" * 64
    (out / "compress.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="written by an earlier version of fastprune"):
        compress(model, train, val, out=out, **kw)


def test_compress_resumes_after_an_interrupted_step(tiny, tmp_path, monkeypatch):
    model, train, val = tiny
    out = tmp_path / "run"
    kw = dict(target_macs=0.6, steps=2, finetune_epochs=0, stats_batches=2, batch_size=4, levels=False,
              progress=False)
    full, _ = compress(model, train, val, out=out, **kw)
    doc = json.loads((out / "compress.json").read_text())
    doc["steps"] = doc["steps"][:1]  # as if killed during step 2
    (out / "compress.json").write_text(json.dumps(doc))
    calls = _counting(monkeypatch)
    resumed, hist = compress(model, train, val, out=out, **kw)
    assert len(hist["steps"]) == 2 and calls == [1]  # only step 2 is redone
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_compare_writes_the_frontier_and_refuses_foreign_folders(tiny, tmp_path):
    model, train, val = tiny
    out = tmp_path / "cmp"
    res = compare(model, train, val, methods=["subset", "random"], target_macs=[0.5], seeds=[0, 1],
                  finetune_epochs=0, stats_batches=2, batch_size=4, out=out)
    assert len(res["rows"]) == 4
    doc = json.loads((out / "summary.json").read_text())
    assert doc["format"] == "fastprune.compare" and {e["method"] for e in doc["summary"]} == {"subset", "random"}
    assert all(e["seeds"] == 2 and e["iou_sd"] is not None for e in doc["summary"])
    rows = {(r["method"], r["seed"]): r["iou"] for r in res["rows"]}
    subset = next(e for e in doc["summary"] if e["method"] == "subset")
    want = [rows["subset", s] - rows["random", s] for s in (0, 1)]
    assert subset["vs_random_seeds"] == 2 and subset["vs_random"] == pytest.approx(sum(want) / 2)
    assert "paired by seed" in (out / "index.html").read_text()
    assert "<img" in (out / "index.html").read_text()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by fastprune compare"):
        compare(model, train, val, target_macs=[0.5], seeds=[0], finetune_epochs=0, out=foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_compare_continues_an_interrupted_grid_and_refuses_other_arguments(tiny, tmp_path, monkeypatch):
    import fastprune.workflows.compare as grid
    from fastprune.cli.outputs import check_output

    model, train, val = tiny
    kw = dict(methods=["random"], target_macs=[0.5], seeds=[0, 1, 2], finetune_epochs=0, stats_batches=2, batch_size=4)
    full = compare(model, train, val, **kw)  # uninterrupted, nothing written
    real, calls = grid.prune_layerwise, []

    def interrupted_at_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(grid, "prune_layerwise", interrupted_at_the_third)
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        compare(model, train, val, out=out, **kw)
    partial = out / "rows.partial.json"
    assert [r["seed"] for r in json.loads(partial.read_text())["rows"]] == [0, 1]
    assert not (out / "summary.json").exists() and check_output(None, out, "compare") == out
    before = partial.read_bytes()
    for other, word in (({"seeds": [0, 1]}, "seeds=[0, 1, 2] (now [0, 1])"), ({"distill": 0.3}, "pipeline")):
        with pytest.raises(ValueError, match=re.escape(word)):
            compare(model, train, val, out=out, **{**kw, **other})
    with pytest.raises(ValueError, match="different arguments: data"):
        compare(model, val, val, out=out, **kw)
    assert partial.read_bytes() == before
    edited = json.loads(before)
    edited["rows"][0]["iou"] = 0.99
    partial.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="corrupt or edited"):
        compare(model, train, val, out=out, **kw)
    partial.write_bytes(before)
    calls.clear()
    res = compare(model, train, val, out=out, **kw)
    assert len(calls) == 1  # only seed 2 ran again
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in res["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in full["rows"]]
    doc = json.loads((out / "summary.json").read_text())
    assert not partial.exists() and "2 of 3 runs" in doc["meta"]["resumed"]


def test_frontier_figure_shows_every_seed_beside_its_mean():
    from fastprune.report.frontier import frontier_figure

    rows = [{"method": m, "target": 0.9, "seed": s, "macs_removed": 0.897, "iou_before": b, "iou": a}
            for m, b0, a0 in (("subset", 0.70, 0.79), ("random", 0.45, 0.74)) for s in range(5)
            for b, a in [(b0 + 0.01 * s, a0 + 0.002 * s)]]
    entries = [{"method": m, "target": 0.9, "macs_removed": 0.897, "iou": a, "iou_sd": 0.01, "iou_before": b,
                "iou_before_sd": 0.02} for m, b, a in (("subset", 0.72, 0.794), ("random", 0.47, 0.744))]
    ax = frontier_figure(entries, 0.8069, rows).axes[0]
    dots = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 5]
    assert len(dots) == 4  # per method: after and before fine-tuning
    want = sorted(round(100 * r[k], 6) for r in rows for k in ("iou", "iou_before"))
    assert sorted(round(float(y), 6) for d in dots for y in d[:, 1]) == want
    xs = sorted({round(float(x), 6) for d in dots for x in d[:, 0]})
    assert len(xs) == 2 and all(89.7 < x < 89.7 + 0.1 * (ax.get_xlim()[1] - ax.get_xlim()[0]) for x in xs)


def test_compress_removes_redundant_unet_levels_and_resumes_the_shallower_model(tmp_path):
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2, upsample="bilinear").eval()
    train = open_dataset("synthetic:n=8,size=16,seed=0")
    out = tmp_path / "run"
    kw = dict(target_macs=0.8, steps=1, finetune_epochs=0, stats_batches=1, batch_size=4, levels=True,
              level_threshold=0.0, progress=False)  # threshold 0: every level but one counts as redundant
    pruned, hist = compress(model, train, None, out=out, **kw)
    assert hist["levels_removed"] == 1 and len(pruned.downs) == 1
    assert 1 - count(pruned, EXAMPLE).macs / count(model, EXAMPLE).macs == pytest.approx(0.8, abs=0.05)
    again, _ = compress(model, train, None, out=out, **kw)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x))


def test_compress_keeps_an_excluded_layer_whole(tiny):
    model, train, val = tiny
    stats = collect(model, torch.utils.data.DataLoader(train, batch_size=4), max_batches=1, progress=False)
    name = next(g.producers[0].module for g in stats.groups.values() if g.prunable)
    pruned, _ = compress(model, train, val, target_macs=0.5, steps=2, finetune_epochs=0, stats_batches=2,
                         batch_size=4, exclude=[name], progress=False)
    modules, original = dict(pruned.named_modules()), dict(model.named_modules())
    assert modules[name].out_channels == original[name].out_channels
    assert 1 - count(pruned, EXAMPLE).macs / count(model, EXAMPLE).macs == pytest.approx(0.5, abs=0.05)


def test_aggregate_pairs_each_method_with_random_by_seed():
    def row(method, seed, iou, target=0.9):
        return {"method": method, "target": target, "seed": seed, "iou": iou, "iou_before": None,
                "macs_removed": target, "params_removed": target}
    rows = [row("subset", 0, 0.80), row("subset", 1, 0.78), row("subset", 2, 0.79),
            row("random", 0, 0.75), row("random", 1, 0.77),  # no seed 2: that seed is not paired
            row("nci", 0, 0.70, target=0.5), row("random", 0, 0.72, target=0.5)]
    got = {(e["method"], e["target"]): e for e in aggregate(rows)}
    s = got["subset", 0.9]
    assert s["seeds"] == 3 and s["vs_random_seeds"] == 2
    assert s["vs_random"] == pytest.approx(0.03)  # (0.05 + 0.01) / 2
    assert s["vs_random_sd"] == pytest.approx(np.std([0.05, 0.01], ddof=1))
    assert s["iou"] == pytest.approx(0.79)  # the unpaired seed still counts in the method's own mean
    assert got["nci", 0.5]["vs_random"] == pytest.approx(-0.02)  # paired within its own budget only
    assert got["random", 0.9]["vs_random"] is None and got["random", 0.9]["vs_random_seeds"] == 0


def test_compare_aims_compress_at_the_cost_one_shot_reaches(tiny, monkeypatch):
    """The budget search lands near, not on, the target; an iterative arm is asked for the one-shot
    allocation's cost, so the arms of one budget are compared at the same cost."""
    import fastprune.workflows.compare as mod
    model, train, val = tiny
    asked = []
    real = mod.compress

    def spy(*a, **k):
        asked.append(k["target_macs"])
        return real(*a, **k)
    monkeypatch.setattr(mod, "compress", spy)
    res = compare(model, train, val, methods=["subset", "subset:steps=2"], target_macs=[0.55], seeds=[0],
                  finetune_epochs=0, stats_batches=2, batch_size=4)
    stats = collect(model, torch.utils.data.DataLoader(train, batch_size=4), max_batches=2, progress=False)
    _, search = budget_counts(model, stats, 0.55, "macs", "redundancy")
    assert asked == [pytest.approx(search["reached"])] and search["reached"] != 0.55
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["subset:steps=2"]["target"] == rows["subset"]["target"] == 0.55
    assert rows["subset:steps=2"]["macs_removed"] == pytest.approx(rows["subset"]["macs_removed"], abs=0.05)


def test_compress_selects_the_final_counts_on_the_input_model(tiny):
    """With every epoch after the last step, the steps only decide the counts: the result is the
    one-shot layer-by-layer pruning of the input model to those counts, fine-tuned with the same
    seed (independent calls)."""
    from fastprune.train import fit
    from fastprune.workflows.layerwise import prune_layerwise
    model, train, val = tiny
    teacher = copy.deepcopy(model)
    kw = dict(target_macs=0.6, steps=2, finetune_epochs=2, stats_batches=2, batch_size=4, seed=3, progress=False)
    pruned, hist = compress(model, train, val, teacher=teacher, **kw)
    assert hist["steps"][-1]["selected_on"] == "input model" and "selected_on" not in hist["steps"][0]
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    counts = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    once = prune_layerwise(model, loader, counts, stats_batches=2)
    # the pipeline's fine-tuning: distillation at T = 1, the last epoch's weights
    fit(once, train, val, epochs=2, lr=2e-3, batch_size=4, seed=3, teacher=teacher, distill=0.5, temperature=1.0,
        keep_best=None, progress=False)
    assert count(once, EXAMPLE).macs == count(pruned, EXAMPLE).macs
    for (k, a), b in zip(pruned.state_dict().items(), once.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # fine-tuning between the steps: the later steps select on the fine-tuned staged network
    _, hist2 = compress(model, train, val, **{**kw, "finetune_between": True})
    assert all("selected_on" not in s for s in hist2["steps"])


@pytest.mark.parametrize("given", [{}, {"temperature": 0.5, "keep_best": "building_iou", "distill": 0.25}])
def test_workflows_fine_tune_with_the_pipelines_recipe(tiny, monkeypatch, given):
    """compare's one-shot and iterative arms and compress fine-tune with the pipeline's
    distillation temperature and epoch choice: by default T = 1 and the last epoch (no keep_best),
    else exactly what the caller gave."""
    import fastprune.workflows.pipeline as pipeline
    model, train, val = tiny
    seen = []
    real = pipeline.fit

    def spy(*a, **k):
        seen.append({key: k[key] for key in ("temperature", "keep_best", "distill")})
        return real(*a, **k)
    monkeypatch.setattr(pipeline, "fit", spy)
    compare(model, train, val, methods=["subset", "subset:steps=2"], target_macs=[0.5], seeds=[0],
            finetune_epochs=1, stats_batches=2, batch_size=4, **given)
    compress(model, train, val, target_macs=0.5, steps=2, finetune_epochs=1, stats_batches=2, batch_size=4,
             teacher=copy.deepcopy(model), progress=False, **given)
    want = {"temperature": 1.0, "keep_best": None, "distill": 0.5, **given}
    assert seen == [want] * 3
