"""Matplotlib figures of the report, drawn from plain records (no pyplot global state).

Each function returns a `matplotlib.figure.Figure`; `save_png` writes one. Colours: one per
model/method, the baseline always grey, removed channels always light.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from .records import HEADLINE, LayerRecord, ModelResult, Sample

BASELINE_COLOR = "#7f7f7f"
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
REMOVED_COLOR = "#e6e6e6"


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A stable colour per name; 'baseline' is grey."""
    out, i = {}, 0
    for m in methods:
        if m == "baseline":
            out[m] = BASELINE_COLOR
        else:
            out[m] = _PALETTE[i % len(_PALETTE)]
            i += 1
    return out


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _layer_order(layers: Mapping[str, Mapping[str, LayerRecord]]) -> list[str]:
    order: list[str] = []
    for recs in layers.values():
        for name in recs:
            if name not in order:
                order.append(name)
    return order


def _height(n_rows: int, per_row: float = 0.32, base: float = 1.6) -> float:
    return max(3.0, base + per_row * n_rows)


def _fmt_count(x: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def channels_figure(layers: Mapping[str, Mapping[str, LayerRecord]]) -> Figure:
    """Per layer, one bar per method: output channels kept (coloured) and removed (light)."""
    if not layers:
        raise ValueError("fastprune: no per-layer records to draw")
    names, methods = _layer_order(layers), list(layers)
    colors = method_colors(methods)
    m = len(methods)
    fig = Figure(figsize=(9, _height(len(names) * max(1, m) * 0.55)), layout="constrained")
    ax = fig.add_subplot()
    h = 0.8 / m
    y = np.arange(len(names))
    for j, meth in enumerate(methods):
        recs = layers[meth]
        kept = np.array([recs[n].kept if n in recs else np.nan for n in names], dtype=float)
        total = np.array([recs[n].channels if n in recs else np.nan for n in names], dtype=float)
        yy = y - 0.4 + h * (j + 0.5)
        ax.barh(yy, kept, height=h * 0.9, color=colors[meth], label=f"{meth}: kept")
        ax.barh(yy, total - kept, left=kept, height=h * 0.9, color=REMOVED_COLOR,
                edgecolor=colors[meth], linewidth=0.6, label=f"{meth}: removed")
        for yi, k, t in zip(yy, kept, total):
            if np.isfinite(k):
                ax.text(t, yi, f" {int(k)}/{int(t)}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    ax.set_ylabel("layer")
    ax.set_title("Channels kept and removed per layer")
    ax.margins(x=0.12)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2 * m)
    return fig


def retained_variance_figure(layers: Mapping[str, Mapping[str, LayerRecord]]) -> Figure:
    """Per layer, one bar per method: fraction of the layer's variance the kept channels explain."""
    methods = [m for m, recs in layers.items() if any(r.retained_variance is not None for r in recs.values())]
    if not methods:
        raise ValueError("fastprune: no retained-variance figures to draw")
    names = _layer_order({m: layers[m] for m in methods})
    colors = method_colors(list(layers))
    fig = Figure(figsize=(9, _height(len(names) * len(methods) * 0.5)), layout="constrained")
    ax = fig.add_subplot()
    h = 0.8 / len(methods)
    y = np.arange(len(names))
    for j, meth in enumerate(methods):
        recs = layers[meth]
        v = np.array([recs[n].retained_variance if n in recs and recs[n].retained_variance is not None
                      else np.nan for n in names], dtype=float)
        ax.barh(y - 0.4 + h * (j + 0.5), v, height=h * 0.9, color=colors[meth], label=meth)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.axvline(1.0, color="black", linewidth=0.6)
    ax.set_xlabel("retained variance of the kept channels (fraction of the layer's total)")
    ax.set_ylabel("layer")
    ax.set_title("Retained variance per layer")
    fig.legend(fontsize=8, loc="outside lower center", ncols=len(methods))
    return fig


def cost_figure(layers: Mapping[str, Mapping[str, LayerRecord]]) -> Figure:
    """Per layer: parameters and MACs of the unpruned model and of each pruned model."""
    methods = list(layers)
    names = _layer_order(layers)
    colors = method_colors(["baseline", *methods])
    have = {n: next((layers[m][n] for m in methods if n in layers[m]), None) for n in names}
    rows = ["baseline", *methods]
    fig = Figure(figsize=(12, _height(len(names) * len(rows) * 0.4)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    h = 0.8 / len(rows)
    y = np.arange(len(names))
    for ax, kind, label, short in ((axes[0], "params", "parameters", "Parameters"),
                                   (axes[1], "macs", "MACs (multiply-accumulates)", "MACs")):
        drawn = False
        for j, row in enumerate(rows):
            if row == "baseline":
                vals = [getattr(have[n], f"{kind}_before") if have[n] is not None else None for n in names]
            else:
                vals = [getattr(layers[row][n], f"{kind}_after") if n in layers[row] else None for n in names]
            v = np.array([np.nan if x is None else x for x in vals], dtype=float)
            if np.isfinite(v).any():
                drawn = True
                ax.barh(y - 0.4 + h * (j + 0.5), v, height=h * 0.9, color=colors[row],
                        label="unpruned" if row == "baseline" else row)
        if not drawn:
            raise ValueError(f"fastprune: no per-layer {kind} figures to draw")
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(lambda x, _pos: _fmt_count(x))
        ax.set_title(f"{short} per layer, before and after pruning")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=len(rows))
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("layer")
    return fig


def spectrum_figure(
    spectra: Mapping[str, Sequence[float]],
    tau: float | None = None,
    kept: Mapping[str, Mapping[str, int]] | None = None,
    columns: int = 4,
) -> Figure:
    """Small multiples, one per layer: eigenvalues of the channel correlation matrix (bars),
    cumulative explained variance (line), the variance threshold τ and each method's keep count."""
    spectra = {k: np.asarray(v, dtype=float) for k, v in spectra.items() if len(v)}
    if not spectra:
        raise ValueError("fastprune: no eigenvalue spectra to draw")
    kept = kept or {}
    colors = method_colors(list(kept))
    n = len(spectra)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.6 * cols, 2.9 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, ev) in zip(axes, spectra.items()):
        ev = np.sort(np.clip(ev, 0, None))[::-1]
        total = ev.sum()
        frac = ev / total if total > 0 else ev
        cum = np.cumsum(frac)
        x = np.arange(1, len(ev) + 1)
        ax.bar(x, frac, color="#9ecae1", width=1.0, label="explained variance")
        ax.set_ylim(0, max(frac.max() * 1.1, 1e-9))
        ax.set_xlabel("component", fontsize=8)
        ax.set_ylabel("explained variance", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(name, fontsize=8)
        ax2 = ax.twinx()
        ax2.plot(x, cum, color="black", linewidth=1.2, label="cumulative")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("cumulative", fontsize=8)
        ax2.tick_params(labelsize=7)
        if tau is not None:
            ax2.axhline(tau, color="#555555", linestyle="--", linewidth=1, label=f"τ = {tau:g}")
        by_count: dict[int, list[str]] = {}
        for meth, counts in kept.items():
            if name in counts:
                by_count.setdefault(int(counts[name]), []).append(meth)
        for k, meths in by_count.items():  # methods keeping the same count share one line
            ax2.axvline(k, color=colors[meths[0]] if len(meths) == 1 else "#444444", linestyle=":",
                        linewidth=1.2, label=f"{', '.join(meths)} keep{'s' if len(meths) == 1 else ''} {k}")
        ax2.legend(fontsize=6, loc="lower right")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle("Eigenvalue spectrum of each layer's channel correlation matrix", fontsize=10)
    return fig


def models_figure(models: Mapping[str, ModelResult]) -> Figure:
    """Whole model: parameters, MACs, CPU latency and the headline metric (building IoU, or a
    classifier's top-1 accuracy) before/after fine-tuning."""
    if not models:
        raise ValueError("fastprune: no model results to draw")
    names = list(models)
    colors = method_colors(names)
    labels = ["unpruned" if n == "baseline" else n for n in names]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    x = np.arange(len(names))
    panels = (
        ("params", "parameters", lambda r: r.params),
        ("macs", "MACs per input", lambda r: r.macs),
        ("latency", "CPU latency (ms, median)", lambda r: r.latency_ms),
    )
    for ax, (_key, label, get) in zip(axes, panels):
        vals = [get(models[n]) for n in names]
        bars = ax.bar(x, vals, color=[colors[n] for n in names])
        ax.bar_label(bars, labels=[_fmt_count(v) for v in vals], fontsize=7)
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
        ax.set_ylabel(label)
        ax.yaxis.set_major_formatter(lambda v, _pos: _fmt_count(v))
        ax.margins(y=0.15)
    ax = axes[3]
    w = 0.38
    key, headline = HEADLINE[models[names[0]].task]
    after = [100 * models[n].headline for n in names]
    before = [100 * (models[n].before_finetune or {}).get(key, np.nan) for n in names]
    has_before = np.isfinite(before)
    off = np.where(has_before, w / 2, 0.0)
    b1 = ax.bar(x - off, before, width=w, color="#c6dbef", edgecolor=[colors[n] for n in names],
                label="pruned, before fine-tuning")
    b2 = ax.bar(x + off, after, width=w, color=[colors[n] for n in names], label="final")
    ax.bar_label(b1, labels=["" if np.isnan(v) else f"{v:.1f}" for v in before], fontsize=7)
    ax.bar_label(b2, labels=[f"{v:.1f}" for v in after], fontsize=7)
    ax.set_xticks(x, labels, rotation=20, fontsize=8)
    ax.set_ylabel(f"{headline} (%)")
    ax.set_ylim(0, 130)
    ax.set_yticks(np.arange(0, 101, 20))
    ax.legend(fontsize=7, loc="upper center")
    fig.suptitle("Whole model: size, cost, speed and accuracy", fontsize=10)
    return fig


def _show_image(img: np.ndarray) -> np.ndarray:
    """Stretch each channel to its 1st..99th percentile so normalised inputs display."""
    out = np.empty_like(img, dtype=np.float32)
    for c in range(img.shape[-1]):
        lo, hi = np.percentile(img[..., c], [1, 99])
        out[..., c] = np.clip((img[..., c] - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return out


def samples_figure(samples: Sequence[Sample], num_classes: int = 2, class_names: Sequence[str] | None = None) -> Figure:
    """Rows of tiles: image, ground truth, then each model's prediction."""
    if not samples:
        raise ValueError("fastprune: no sample tiles to draw")
    preds = list(samples[0].predictions)
    cols = 2 + len(preds)
    rows = len(samples)
    fig = Figure(figsize=(2.3 * cols, 2.3 * rows + 0.7), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    if num_classes == 2:
        colours = ["#202020", "#ffcc00"]
        legend = class_names or ["background", "building"]
        names = ["dark", "yellow"]
    else:
        colours = [_PALETTE[i % len(_PALETTE)] for i in range(num_classes)]
        legend = class_names
        names = [f"colour {i}" for i in range(num_classes)]
    cmap = ListedColormap(colours)
    titles = ["image", "ground truth", *["unpruned" if p == "baseline" else p for p in preds]]
    for r, s in enumerate(samples):
        panels = [None, s.mask, *[s.predictions.get(p) for p in preds]]
        for c, data in enumerate(panels):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(_show_image(s.image))
            elif data is not None:
                ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(f"tile {r + 1}", fontsize=9)
    title = "Sample tiles: image, ground truth, predictions before and after pruning"
    if legend:
        title += "  (" + ", ".join(f"{c}: {n}" for c, n in zip(names, legend)) + ")"
    fig.suptitle(title, fontsize=9)
    return fig
