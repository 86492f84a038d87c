"""Writes the report folder: PNG figures, a self-contained index.html (figures embedded) and
summary.json (the contract: 'baseline' plus one entry per method)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import figures
from .records import HEADLINE, LayerRecord, ModelResult, Sample, summary


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "–"
    if kind == "pct":
        return f"{100 * v:.2f}"
    if kind == "count":
        return figures._fmt_count(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _models_table(models: Mapping[str, ModelResult]) -> str:
    base = models["baseline"]
    key, label = HEADLINE[base.task]
    extra_cols = ("mIoU (%)", "pixel acc. (%)") if base.task == "segmentation" else ()
    head = ("model", "params", "Δ params", "MACs", "Δ MACs", "CPU latency (ms)", "speed-up",
            f"{label} before FT (%)", f"{label} (%)", f"Δ {key} (points)") + extra_cols
    rows = []
    for name, r in models.items():
        is_base = name == "baseline"
        bf = r.before_finetune or {}
        cells = [
            "unpruned" if is_base else name,
            _fmt(r.params, "count"),
            "" if is_base else f"{100 * (r.params / base.params - 1):+.1f}%",
            _fmt(r.macs, "count"),
            "" if is_base else f"{100 * (r.macs / base.macs - 1):+.1f}%",
            f"{r.latency_ms:.2f}",
            "" if is_base else f"{base.latency_ms / r.latency_ms:.2f}×",
            _fmt(bf.get(key), "pct"),
            _fmt(r.headline, "pct"),
            "" if is_base else f"{100 * (r.headline - base.headline):+.2f}",
        ]
        if extra_cols:
            cells += [_fmt(r.miou, "pct"), _fmt(r.pixel_accuracy, "pct")]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c) if i == 0 else c}</td>" for i, c in enumerate(cells)) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _layers_table(layers: Mapping[str, Mapping[str, LayerRecord]]) -> str:
    methods = list(layers)
    names = figures._layer_order(layers)
    head = ["layer", "channels"] + [f"{m} kept" for m in methods] + [f"{m} retained var." for m in methods]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for n in names:
        first = next(layers[m][n] for m in methods if n in layers[m])
        cells = [html.escape(n), str(first.channels)]
        cells += [str(layers[m][n].kept) if n in layers[m] else "–" for m in methods]
        cells += [_fmt(layers[m][n].retained_variance, "pct") + ("%" if layers[m][n].retained_variance is not None else "")
                  if n in layers[m] else "–" for m in methods]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:13px}code{background:#f5f5f5;padding:0 3px}"""


def render_report(
    out_dir: str | Path,
    models: Mapping[str, ModelResult],
    layers: Mapping[str, Mapping[str, LayerRecord]] | None = None,
    spectra: Mapping[str, Sequence[float]] | None = None,
    tau: float | None = None,
    samples: Sequence[Sample] | None = None,
    meta: Mapping[str, Any] | None = None,
    num_classes: int = 2,
    title: str = "fastprune report",
) -> Path:
    """Write `out_dir/index.html`, `out_dir/summary.json` and the PNGs; return the HTML path.

    `models` needs 'baseline' and one entry per method; `layers` maps method -> layer ->
    record; `spectra` layer -> eigenvalues of the channel correlation matrix; `meta` is shown
    as a key/value table (machine, threads, timings ...) and written to meta.json.
    """
    summ = summary(models)  # validates before anything is written
    layers = {m: dict(r) for m, r in (layers or {}).items() if r}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    sections: list[tuple[str, str, str]] = []  # (title, png name, caption)
    headline = HEADLINE[models["baseline"].task][1]
    todo: list[tuple[str, Any, str, str]] = [
        ("Whole model", lambda: figures.models_figure(models), "models.png",
         f"Parameters, MACs per input and median CPU latency of the unpruned and pruned models; {headline} of "
         "each pruned model right after surgery and after fine-tuning."),
    ]
    if layers:
        todo.append(("Channels per layer", lambda: figures.channels_figure(layers), "channels.png",
                     "Output channels each method keeps (coloured) and removes (light) in every pruned layer."))
        if any(r.retained_variance is not None for recs in layers.values() for r in recs.values()):
            todo.append(("Retained variance per layer", lambda: figures.retained_variance_figure(layers),
                         "retained_variance.png",
                         "Fraction of each layer's total variance explained by regressing all its channels on "
                         "the kept ones: tr(Σ_{:,K} Σ_{KK}⁻¹ Σ_{K,:}) / tr(Σ)."))
        if any(r.params_before is not None or r.macs_before is not None for recs in layers.values() for r in recs.values()):
            todo.append(("Cost per layer", lambda: figures.cost_figure(layers), "cost.png",
                         "Parameters and MACs of every pruned layer before and after pruning."))
    if spectra:
        kept = {m: {n: r.kept for n, r in recs.items()} for m, recs in layers.items()}
        todo.append(("Eigenvalue spectra", lambda: figures.spectrum_figure(spectra, tau, kept), "spectra.png",
                     "Bars: share of each principal component in the layer's variance; line: cumulative share; "
                     "dashed: the variance threshold τ; dotted: how many channels each method keeps."))
    if samples:
        todo.append(("Sample tiles", lambda: figures.samples_figure(samples, num_classes), "samples.png",
                     "Validation tiles: image, ground truth, the unpruned model's prediction and each pruned, "
                     "fine-tuned model's prediction."))
    for sec_title, make, png, caption in todo:
        fig = make()
        figures.save_png(fig, out / png)
        sections.append((sec_title, png, caption))

    (out / "summary.json").write_text(json.dumps(summ, indent=1))
    if meta:
        (out / "meta.json").write_text(json.dumps(dict(meta), indent=1, default=str))

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Summary</h2>" + _models_table(models))
    parts.append("<p class='note'>MACs: multiply-accumulates of one forward pass. Latency: median of timed CPU "
                 "forward passes after warm-up (threads and repeats below). "
                 + ("IoU: building class. " if models["baseline"].task == "segmentation" else "")
                 + "FT: fine-tuning. Machine-readable: <code>summary.json</code>.</p>")
    for sec_title, png, caption in sections:
        data = base64.b64encode((out / png).read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(sec_title)}</h2><p class='note'>{html.escape(caption)}</p>"
                     f"<img alt='{html.escape(sec_title)}' src='data:image/png;base64,{data}'>")
        if sec_title == "Channels per layer":
            parts.append(_layers_table(layers))
    if meta:
        parts.append("<h2>How this was measured</h2><table>" + "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v, default=str) if not isinstance(v, str) else v)}</td></tr>"
            for k, v in meta.items()) + "</table>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path
