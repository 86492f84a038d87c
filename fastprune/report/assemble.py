"""From models, plans and statistics to the report's plain records (the bridge between the
library's objects and `render_report`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .latency import Latency, measure_latency
from .records import LayerRecord, ModelResult, Sample, metrics_from_evaluation


def model_result(model: nn.Module, data: Any, example: torch.Tensor, *, batch_size: int = 8,
                 before_finetune: Mapping[str, float] | None = None, latency: Latency | None = None,
                 warmup: int = 3, repeats: int = 10, threads: int | None = None,
                 extra: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None) -> ModelResult:
    """Evaluate `model` on `data` (unless its `metrics` were computed already), count its
    params/MACs on `example`, and time it on the CPU (unless `latency` was measured already,
    e.g. interleaved with other models)."""
    from ..graph.cost import count
    from ..train import evaluate

    if metrics is None:
        metrics = metrics_from_evaluation(evaluate(model, data, batch_size=batch_size))
    cost = count(model, example)
    lat = latency or measure_latency(model, example, warmup=warmup, repeats=repeats, threads=threads)
    return ModelResult(params=cost.params, macs=cost.macs, latency_ms=lat.median_ms, latency=lat.to_dict(),
                       before_finetune=dict(before_finetune) if before_finetune else None,
                       extra=dict(extra or {}), **metrics)


def _layer_cost(per_layer: Mapping[str, Any], names: Sequence[str]) -> tuple[int | None, int | None]:
    found = [per_layer[n] for n in names if n in per_layer]
    if not found:
        return None, None
    return int(sum(p for p, _ in found)), int(sum(m for _, m in found))


def layer_records(plan: Any, before: Any = None, after: Any = None) -> dict[str, LayerRecord]:
    """One record per planned layer (channel group): channels kept, retained variance (as the
    planner recorded it), params/MACs of the group's producers before and after (from
    `fastprune.count(...).per_layer` of the unpruned and pruned models)."""
    out: dict[str, LayerRecord] = {}
    items = plan.layers.items() if plan.layers else (
        (n, {"channels": plan.channels[n], "kept": len(k), "producers": [n]}) for n, k in plan.keep.items())
    for name, rec in items:
        producers = rec.get("producers") or [name]
        pb, mb = _layer_cost(before.per_layer, producers) if before is not None else (None, None)
        pa, ma = _layer_cost(after.per_layer, producers) if after is not None else (None, None)
        rv = rec.get("retained_variance")
        # planners that record other things per layer (gates: gate values) still have the counts
        channels = rec.get("channels", plan.channels.get(name))
        kept = rec.get("kept", len(plan.keep.get(name, ())))
        out[name] = LayerRecord(channels=int(channels), kept=int(kept),
                                retained_variance=None if rv is None else float(rv),
                                params_before=pb, params_after=pa, macs_before=mb, macs_after=ma)
    return out


def spectra(stats: Any, plan: Any) -> dict[str, np.ndarray]:
    """Eigenvalues of each planned layer's channel correlation matrix (from the statistics)."""
    from ..criteria.linalg import correlation, eigenvalues

    out = {}
    for name, rec in (plan.layers or {}).items():
        gid = rec.get("group")
        mom = stats.moments.get(gid) if gid is not None else None
        cov = getattr(mom, "cov", None) if mom is not None else None
        if cov is None:
            continue
        out[name] = eigenvalues(correlation(torch.as_tensor(cov).double().cpu().numpy()))
    return out


@torch.no_grad()
def predictions(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Argmax class maps (N, H, W) of `model` on a batch, in eval mode (mode restored)."""
    was = model.training
    model.eval()
    try:
        return model(images).argmax(1).cpu().numpy()
    finally:
        model.train(was)


def samples(data: Any, models: Mapping[str, nn.Module], k: int = 3, scan: int = 32,
            target_class: int = 1) -> list[Sample]:
    """`k` tiles with each model's prediction: of the first `scan` tiles, those where
    `target_class` (buildings) covers the most pixels, so the figure shows what matters."""
    n = min(scan, len(data))
    if k <= 0 or n == 0:
        return []
    cover = [(int((torch.as_tensor(data[i][1]) == target_class).sum()), -i) for i in range(n)]
    chosen = sorted(-i for _, i in sorted(cover, reverse=True)[:k])
    pairs = [data[i] for i in chosen]
    images = torch.stack([torch.as_tensor(p[0]) for p in pairs])
    preds = {name: predictions(m, images) for name, m in models.items()}
    return [Sample(images[i].numpy(), np.asarray(pairs[i][1]), {n: p[i] for n, p in preds.items()})
            for i in range(len(pairs))]
