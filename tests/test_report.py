"""The report: records validate, summary.json keeps its contract, every figure renders with
labelled axes and drawn content, index.html is self-contained; CPU latency measures honestly."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from fastprune.report import (LayerRecord, ModelResult, Sample, measure_latencies, measure_latency,
                              metrics_from_evaluation, render_report, summary)
from fastprune.report import figures


def _models():
    return {
        "baseline": ModelResult(1000, 5000, 4.0, 0.8, 0.85, 0.95),
        "pca_nci": ModelResult(400, 2000, 2.0, 0.79, 0.84, 0.94, before_finetune={"iou": 0.5, "miou": 0.6, "pixel_accuracy": 0.9}),
        "lfa": ModelResult(300, 1500, 1.5, 0.81, 0.86, 0.96, before_finetune={"iou": 0.4, "miou": 0.5, "pixel_accuracy": 0.8}),
    }


def _layers():
    rng = np.random.default_rng(1)
    names = ["inc.0", "inc.3", "downs.0.1", "ups.0.conv.0"]
    return {m: {n: LayerRecord(channels=16, kept=int(rng.integers(2, 16)), retained_variance=float(rng.uniform(0.5, 1)),
                               params_before=2304, params_after=int(rng.integers(100, 2304)),
                               macs_before=9_000_000, macs_after=int(rng.integers(1_000_000, 9_000_000)))
                for n in names} for m in ("pca_nci", "lfa")}


def _samples(k=2, hw=(24, 32)):
    rng = np.random.default_rng(2)
    out = []
    for _ in range(k):
        mask = (rng.random(hw) > 0.6).astype(np.int64)
        out.append(Sample(rng.random((3, *hw)).astype(np.float32), mask,
                          {"baseline": mask, "pca_nci": 1 - mask, "lfa": mask}))
    return out


def test_summary_contract_and_reductions():
    s = summary(_models())
    assert list(s) == ["baseline", "pca_nci", "lfa"]
    for entry in s.values():
        for key in ("params", "macs", "latency_ms", "iou", "miou", "pixel_accuracy"):
            assert isinstance(entry[key], (int, float))
    assert s["pca_nci"]["params_reduction"] == pytest.approx(0.6)
    assert s["lfa"]["macs_reduction"] == pytest.approx(0.7)
    assert s["pca_nci"]["iou_change"] == pytest.approx(-0.01)
    assert s["pca_nci"]["before_finetune"]["iou"] == 0.5
    with pytest.raises(ValueError, match="baseline"):
        summary({"lfa": _models()["lfa"]})


def test_records_reject_bad_input():
    with pytest.raises(ValueError):
        LayerRecord(channels=4, kept=5)
    with pytest.raises(ValueError, match="finite"):
        ModelResult(1, 1, float("nan"), 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="before_finetune"):
        ModelResult(1, 1, 1.0, 0.5, 0.5, 0.5, before_finetune={"iou": 0.1})
    with pytest.raises(ValueError, match="mask"):
        Sample(np.zeros((3, 8, 8)), np.zeros((8, 9)), {})
    with pytest.raises(ValueError, match="prediction"):
        Sample(np.zeros((3, 8, 8)), np.zeros((8, 8)), {"baseline": np.zeros((4, 4))})
    assert metrics_from_evaluation({"building_iou": 0.7, "miou": 0.8, "pixel_accuracy": 0.9, "iou": [0.9, 0.7]}) == \
        {"iou": 0.7, "miou": 0.8, "pixel_accuracy": 0.9}
    with pytest.raises(ValueError, match="building_iou"):
        metrics_from_evaluation({"miou": 0.8})


def _drawn(fig: Figure) -> None:
    """Every visible axes has labels and draws something (bars, lines or an image)."""
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert visible
    for ax in visible:
        if ax.images:
            continue  # image tiles carry titles, not axis labels
        assert ax.get_xlabel() or ax.get_ylabel(), f"unlabelled axes in {fig._suptitle or ax.get_title()}"
        assert ax.patches or ax.lines, f"empty axes {ax.get_title()!r}"


def test_figures_are_labelled_and_drawn():
    layers = _layers()
    spectra = {n: np.sort(np.random.default_rng(3).exponential(size=16))[::-1] for n in layers["lfa"]}
    kept = {m: {n: r.kept for n, r in recs.items()} for m, recs in layers.items()}
    figs = [figures.channels_figure(layers), figures.retained_variance_figure(layers), figures.cost_figure(layers),
            figures.spectrum_figure(spectra, 0.9, kept), figures.models_figure(_models()),
            figures.samples_figure(_samples())]
    for fig in figs:
        _drawn(fig)
    # the spectrum shows the τ line and each method's keep count
    ax2 = [ax for ax in figs[3].axes if ax.get_ylabel() == "cumulative"][0]
    labels = [l.get_label() for l in ax2.lines]
    assert "τ = 0.9" in labels and any(l.startswith("pca_nci keeps") for l in labels)
    # channels: kept bars equal the records
    bars = {c.get_label(): [p.get_width() for p in c.patches] for c in figs[0].axes[0].containers}
    for m, recs in layers.items():
        assert bars[f"{m}: kept"] == [r.kept for r in recs.values()]
        assert bars[f"{m}: removed"] == [r.channels - r.kept for r in recs.values()]


def test_spectrum_cumulative_reaches_one():
    ev = np.array([4.0, 2.0, 1.0, 1.0])
    fig = figures.spectrum_figure({"a": ev}, tau=0.75)
    ax2 = [ax for ax in fig.axes if ax.get_ylabel() == "cumulative"][0]
    cum = ax2.lines[0].get_ydata()
    np.testing.assert_allclose(cum, np.cumsum(ev) / ev.sum())


def test_render_report_writes_self_contained_html(tmp_path):
    layers = _layers()
    spectra = {n: np.linspace(3, 0.1, 16) for n in layers["lfa"]}
    path = render_report(tmp_path / "report", _models(), layers, spectra, 0.95, _samples(),
                         meta={"torch_threads": 2})
    out = tmp_path / "report"
    assert path == out / "index.html"
    doc = json.loads((out / "summary.json").read_text())
    assert set(doc) == {"baseline", "pca_nci", "lfa"}
    assert doc["lfa"]["params"] == 300 and doc["baseline"]["latency_ms"] == 4.0
    html = path.read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["channels.png", "cost.png", "models.png", "retained_variance.png", "samples.png", "spectra.png"]
    embedded = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(embedded) == len(pngs)
    for data in embedded:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src='http" not in html and "<script" not in html
    assert "+0.99" in html or "-1.00" in html  # Δ IoU in points for pca_nci: 79 - 80
    assert json.loads((out / "meta.json").read_text()) == {"torch_threads": 2}


def test_render_report_without_layers_still_has_summary(tmp_path):
    render_report(tmp_path, {"baseline": _models()["baseline"]})
    assert (tmp_path / "models.png").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["baseline"]["macs"] == 5000


def test_render_report_validates_before_writing(tmp_path):
    with pytest.raises(ValueError, match="baseline"):
        render_report(tmp_path / "r", {"lfa": _models()["lfa"]})
    assert not (tmp_path / "r").exists()


class _Sleepy(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 2


def test_latency_counts_warmup_and_repeats_and_restores_state():
    m = _Sleepy().train()
    threads = torch.get_num_threads()
    lat = measure_latency(m, torch.zeros(1, 3, 8, 8), warmup=2, repeats=5, threads=1)
    assert m.calls == 7
    assert m.training and torch.get_num_threads() == threads
    assert lat.threads == 1 and lat.repeats == 5 and lat.input_shape == (1, 3, 8, 8)
    assert 0 <= lat.min_ms <= lat.median_ms <= lat.max_ms
    assert lat.to_dict()["input_shape"] == [1, 3, 8, 8]


def test_latency_median_tracks_work():
    small, big = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    x_small, x_big = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 256, 256)
    t_small = measure_latency(small, x_small, repeats=5).min_ms  # min: robust to a stalled repeat
    t_big = measure_latency(big, x_big, repeats=5).min_ms
    assert t_big > t_small  # 256x the work


@pytest.mark.parametrize("kwargs,match", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"), ({"threads": 0}, "threads")])
def test_latency_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_latency(nn.Identity(), torch.zeros(1), **kwargs)


def test_latency_rejects_non_module():
    with pytest.raises(TypeError):
        measure_latency(lambda x: x, torch.zeros(1))


def test_latencies_interleave_models_and_restore_state():
    order = []

    class Tag(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            order.append(self.name)
            return x

    a, b = Tag("a").train(), Tag("b").eval()
    res = measure_latencies({"a": a, "b": b}, torch.zeros(1, 3, 4, 4), warmup=1, repeats=3, threads=1)
    assert order == ["a", "b"] * 4  # round by round, warm-up included
    assert set(res) == {"a", "b"} and res["a"].repeats == 3 and res["a"].threads == 1
    assert a.training and not b.training
    with pytest.raises(ValueError):
        measure_latencies({}, torch.zeros(1))
    with pytest.raises(TypeError):
        measure_latencies({"f": lambda x: x}, torch.zeros(1))
