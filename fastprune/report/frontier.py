"""`compare`: the methods x budgets x seeds grid (fastprune.workflows.compare) written as a report:
a table (mean +- sd over seeds), a Pareto plot of building IoU against MACs removed (before and
after fine-tuning) and summary.json."""
from __future__ import annotations

import base64
import html
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from .._documents import changed_argument, check_seal, seal, sha256, weights_digest
from .._files import atomic_write
from ..workflows.compare import Arm, GridConfig, aggregate, config_dict, run_grid
from ..workflows.pipeline import Pipeline
from . import figures
from .render import _CSS

FORMAT = "fastprune.compare"
PARTIAL = "rows.partial.json"  # the finished runs of a grid still running, or interrupted
PARTIAL_FORMAT = "fastprune.compare.partial"


def frontier_figure(entries: Sequence[Mapping[str, Any]], baseline_iou: float,
                    rows: Sequence[Mapping[str, Any]] = ()) -> Figure:
    """Building IoU (%) against MACs removed (%), one colour per method; filled markers after
    fine-tuning, hollow before it; error bars: sd over seeds; small dots: the seeds' own runs
    (`rows`), spread a little to the side of their mean so that they do not hide each other."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    methods = list(dict.fromkeys(e["method"] for e in entries))
    colors = figures.method_colors(methods)
    xs = [100 * e["macs_removed"] for e in entries] or [0.0]
    pad = max(0.08 * (max(xs) - min(xs)), 2.0)
    step = 0.012 * (max(xs) - min(xs) + 2 * pad)  # x offset of the seed dots: ~1 % of the axis
    for i, m in enumerate(methods):
        es = sorted((e for e in entries if e["method"] == m), key=lambda e: e["macs_removed"])
        x = [100 * e["macs_removed"] for e in es]
        for key, style, label in (("iou", "o-", m), ("iou_before", "o--", f"{m} before FT")):
            pts = [(xi, e[key], e[f"{key}_sd"]) for xi, e in zip(x, es) if e.get(key) is not None]
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * (p[2] or 0) for p in pts],
                        fmt=style, color=colors[m], capsize=3, label=label,
                        mfc=colors[m] if key == "iou" else "white")
            seeds = [r for r in rows if r["method"] == m and r.get(key) is not None]
            if seeds:
                ax.scatter([100 * r["macs_removed"] + (i + 1) * step for r in seeds], [100 * r[key] for r in seeds],
                           s=9, alpha=0.45, color=colors[m] if key == "iou" else "white",
                           edgecolors=colors[m], linewidths=0.6, zorder=1)
    ax.axhline(100 * baseline_iou, color=figures.BASELINE_COLOR, ls=":", label="unpruned")
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_xlabel("MACs removed (%)")
    ax.set_ylabel("building IoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _cell(mean: float | None, sd: float | None) -> str:
    return "–" if mean is None else f"{100 * mean:.2f} ± {100 * (sd or 0):.2f}"


def vs_random_text(entry: Mapping[str, Any]) -> str | None:
    """An `aggregate` entry's paired difference to random, in points ("+2.30 ± 1.10, 5 seeds"), or
    None when the grid has no random arm to pair it with."""
    if entry.get("vs_random") is None:
        return None
    return (f"{100 * entry['vs_random']:+.2f} ± {100 * entry['vs_random_sd']:.2f}, "
            f"{entry['vs_random_seeds']} seeds")


def _table(entries: Sequence[Mapping[str, Any]], baseline_iou: float) -> str:
    head = ("method", "budget", "seeds", "MACs removed (%)", "params removed (%)", "IoU before FT (%)",
            "IoU after FT (%)", "Δ IoU vs unpruned (points)", "Δ IoU vs random, paired by seed (points)")
    rows = []
    for e in sorted(entries, key=lambda e: (e["target"], e["method"])):
        d = "–" if e["iou"] is None else f"{100 * (e['iou'] - baseline_iou):+.2f}"
        paired = vs_random_text(e) or "–"
        cells = (html.escape(e["method"]), f"{100 * e['target']:.0f}%", str(e["seeds"]),
                 _cell(e["macs_removed"], e["macs_removed_sd"]), _cell(e["params_removed"], e["params_removed_sd"]),
                 _cell(e["iou_before"], e["iou_before_sd"]), _cell(e["iou"], e["iou_sd"]), d, paired)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _format_of(path: Path) -> Any:
    try:
        return json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def check_out(out: str | os.PathLike) -> Path:
    """The report folder: new, empty, or one an earlier `compare` wrote, finished or interrupted
    (else ValueError)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if _format_of(out / "summary.json") != FORMAT and _format_of(out / PARTIAL) != PARTIAL_FORMAT:
            raise ValueError(f"fastprune: {out} exists and was not written by fastprune compare; choose a new folder")
    return out


def _data_digest(data: Dataset | None) -> dict[str, Any] | None:
    """How many samples, and the digest of the first one's tensors: enough to tell data sets apart."""
    if data is None:
        return None
    first = data[0]
    tensors = [t for t in (first if isinstance(first, (tuple, list)) else [first]) if isinstance(t, torch.Tensor)]
    raw = (t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() for t in tensors)
    return {"samples": len(data), "first": sha256(*raw)[:32]}


def _resume(out: Path, key: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows an interrupted run of the same grid left in `out` (ValueError for another grid)."""
    path = out / PARTIAL
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
        check_seal(doc, str(path))
        old, rows = doc["key"], doc["rows"]
        ok = doc.get("format") == PARTIAL_FORMAT and isinstance(old, dict) and isinstance(rows, list)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        ok = False
    if not ok:
        raise ValueError(f"fastprune: {path} is not the partial record of a compare run (corrupt or edited); "
                         "remove it to start the grid again, or choose a new folder")
    if old != key:
        what = next((k for k in ("model", "data") if old.get(k) != key.get(k)), None)
        if what is None:
            change = changed_argument(old.get("config") or {}, key["config"])
            what = change[1] if change else "config"
        raise ValueError(f"fastprune: {out} holds an interrupted compare run with different arguments: {what}; "
                         "run the same command to continue it, or choose a new folder")
    return rows


def write_frontier(out: str | os.PathLike, result: Mapping[str, Any], meta: Mapping[str, Any] | None = None,
                   title: str = "fastprune compare") -> Path:
    """Write index.html, frontier.png and summary.json for a `compare` result (its rows and their
    `aggregate` summary); returns the HTML."""
    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = result["summary"]
    base = result["baseline"]["building_iou"]
    figures.save_png(frontier_figure(entries, base, result["rows"]), out / "frontier.png")
    doc = {"format": FORMAT, "version": 1, "baseline": result["baseline"], "config": result["config"],
           "summary": entries, "rows": result["rows"], "meta": dict(meta or {})}
    atomic_write(out / "summary.json", json.dumps(doc, indent=1, default=str))
    png = base64.b64encode((out / "frontier.png").read_bytes()).decode("ascii")
    cfg = result["config"]
    pipe = cfg.get("pipeline", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>Unpruned building IoU {100 * base:.2f}%. Every method prunes to the same per-layer "
             f"allocation (counts by {html.escape(str(pipe.get('allocation', 'redundancy')))} for each budget), "
             "selects its channels, is reconstructed "
             f"({html.escape(str(pipe.get('reconstruct')))}) and fine-tuned for {pipe.get('finetune_epochs')} epochs "
             f"(distillation {pipe.get('distill')} at temperature {pipe.get('temperature')}, "
             f"{'the epoch with the best validation ' + str(pipe['keep_best']) if pipe.get('keep_best') else 'the last epoch'} "
             f"kept); mean ± sd over seeds {cfg.get('seeds')}. "
             "Machine-readable: <code>summary.json</code>.</p>",
             "<h2>Results</h2>" + _table(entries, base),
             "<h2>IoU against MACs</h2><p class='note'>Filled: after fine-tuning; hollow, dashed: right after "
             "pruning and reconstruction; error bars: sd over seeds; small dots, to the right of their mean: "
             "the single seeds.</p>"
             f"<img alt='frontier' src='data:image/png;base64,{png}'>"]
    if meta:
        parts.append("<h2>How this was measured</h2><table>" + "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
            + "</table>")
    parts.append("</body></html>")
    return atomic_write(out / "index.html", "".join(parts))


def compare(model: nn.Module, train_data: Dataset, val_data: Dataset, test_data: Dataset | None = None, *,
            methods: Sequence[str] = ("subset", "random"), target_macs: Sequence[float] | None = None,
            target_params: Sequence[float] | None = None, seeds: Sequence[int] = (0, 1, 2),
            finetune_epochs: int = Pipeline.finetune_epochs, reconstruct: str | None = Pipeline.reconstruct,
            distill: float = Pipeline.distill, temperature: float = Pipeline.temperature, lr: float = Pipeline.lr,
            keep_best: str | None = Pipeline.keep_best, batch_size: int = Pipeline.batch_size,
            stats_batches: int = Pipeline.stats_batches, exclude: Sequence[str] = (),
            min_channels: int = Pipeline.min_channels, allocation: str = Pipeline.allocation, out: str | os.PathLike | None = None,
            meta: Mapping[str, Any] | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run methods x budgets x seeds on a trained `model` (each: prune to the budget's allocation,
    select by the method, reconstruct, fine-tune `finetune_epochs` with the unpruned model as
    teacher, distillation weight `distill` at `temperature`; the last epoch's weights, or the best
    validation epoch's by the metric `keep_best`) and, with `out`, write the report there.
    Methods: criterion names, "NAME:steps=N" for iterative compression. Returns {"baseline",
    "config", "rows", "summary"}. With `out`, every finished run is saved to OUT/rows.partial.json
    as it ends, and the same call on the same model and data continues an interrupted grid
    there (other arguments are refused); `meta` goes into the report."""
    if (target_macs is None) == (target_params is None):
        raise ValueError("fastprune: compare needs target_macs= or target_params= (a list of fractions removed)")
    targets = [float(t) for t in (target_macs if target_macs is not None else target_params)]
    pipe = Pipeline(finetune_epochs=int(finetune_epochs), reconstruct=reconstruct, distill=float(distill),
                    temperature=float(temperature), lr=float(lr), keep_best=keep_best, batch_size=int(batch_size),
                    stats_batches=int(stats_batches), exclude=list(exclude), min_channels=int(min_channels),
                    allocation=allocation)
    config = GridConfig(arms=[Arm.parse(m) for m in methods], targets=targets, seeds=[int(s) for s in seeds],
                        which="macs" if target_macs is not None else "params", pipeline=pipe)
    if out is None:
        result = run_grid(model, train_data, val_data, test_data, config, log)
        result["summary"] = aggregate(result["rows"])
        return result
    out = check_out(out)
    key = json.loads(json.dumps({"config": config_dict(config), "model": weights_digest(model),
                                 "data": [_data_digest(d) for d in (train_data, val_data, test_data)]}))
    done = _resume(out, key)

    def save(rows: list[dict[str, Any]]) -> None:  # after every row: an interrupted run continues
        atomic_write(out / PARTIAL, json.dumps(seal({"format": PARTIAL_FORMAT, "key": key, "rows": rows}), indent=1))

    t0 = time.perf_counter()
    result = run_grid(model, train_data, val_data, test_data, config, log, done=done, on_row=save)
    result["summary"] = aggregate(result["rows"])
    meta = {**(meta or {}), "seconds": round(time.perf_counter() - t0, 1)}
    if done:
        meta["resumed"] = f"{len(done)} of {len(result['rows'])} runs came from the interrupted run"
    write_frontier(out, result, meta)
    (out / PARTIAL).unlink(missing_ok=True)
    return result


__all__ = ["compare", "frontier_figure", "vs_random_text", "write_frontier"]
