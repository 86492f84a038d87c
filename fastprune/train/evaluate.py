"""Evaluation: metrics over a dataset of (image, mask) pairs, and full-tile sliding-window
evaluation that stitches overlapping window predictions back into whole aerial tiles."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.tiles import window_starts
from .metrics import check_labels, classification_metrics, confusion_update, metrics_from_confusion


def _quiet() -> bool | None:
    return True if os.environ.get("TQDM_DISABLE") else None


def _device(model: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _num_classes(model: nn.Module, data: Any, num_classes: int | None) -> int:
    n = num_classes or getattr(data, "num_classes", None) or getattr(model, "num_classes", None)
    if not n:
        raise ValueError("evaluate: num_classes not given and not found on the data or model")
    return max(2, int(n))  # a one-logit binary model still has two classes


def _all_reduce(confusion: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(confusion)
    return confusion


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, num_classes: int | None = None, *, batch_size: int = 8,
             device: Any = None, ignore_index: int | None = None, num_workers: int = 0,
             progress: bool = True) -> dict:
    """Metrics of ``model``'s argmax prediction on ``data``.

    Segmentation (``data`` of (image (3, H, W), mask (H, W)), logits (N, C, H, W)):
    ``pixel_accuracy``, ``iou`` (per class), ``miou``, ``building_iou`` (class 1), ``confusion``
    (rows target, columns prediction). Classification (labels (), logits (N, C)):
    ``accuracy`` (top-1), ``class_accuracy`` (per class), ``confusion``, ``samples``.

    ``data`` is a Dataset (or DataLoader). Under ``torch.distributed`` each rank evaluates what
    it is given and the confusion matrices are summed across ranks. The model's train/eval
    mode is restored afterwards.
    """
    n = _num_classes(model, data, num_classes)
    if ignore_index is None:
        ignore_index = getattr(data, "ignore_index", None)
    dev = _device(model, device)
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    confusion = torch.zeros(n, n, dtype=torch.int64, device=dev)
    classifier = None
    was_training = model.training
    model.eval()
    try:
        for image, target in tqdm(loader, desc="evaluate", leave=False,
                                  disable=_quiet() if progress else True):
            logits = model(image.to(dev))
            kind = logits.ndim == 2 and target.ndim == 1
            if classifier is not None and kind != classifier:
                raise ValueError("evaluate: the data mixes class labels and masks")
            classifier = kind
            if not classifier and logits.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"evaluate: model output {tuple(logits.shape[-2:])} does not match "
                                 f"mask {tuple(target.shape[-2:])}")
            check_labels(logits.shape[1], target, ignore_index)
            pred = logits.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
            confusion_update(confusion, pred, target.to(dev), ignore_index)
    finally:
        model.train(was_training)
    confusion = _all_reduce(confusion)
    if classifier:
        return classification_metrics(confusion)
    return metrics_from_confusion(confusion, ignore_index)


def _weight_window(h: int, w: int, overlap: int) -> torch.Tensor:
    """Blending weights for a window: 1 inside, ramping down linearly over ``overlap`` pixels
    at the borders (never to 0), so overlapping windows fade into each other."""
    def ramp(n: int) -> torch.Tensor:
        r = torch.ones(n)
        k = min(overlap, n // 2)
        if k > 0:
            edge = (torch.arange(k, dtype=torch.float32) + 1) / (k + 1)
            r[:k] = edge
            r[n - k:] = edge.flip(0)
        return r
    return ramp(h)[:, None] * ramp(w)[None, :]


@torch.no_grad()
def predict_scene(model: nn.Module, source: Any, i: int, tile: int, overlap: int, *,
                  batch_size: int = 4, device: Any = None, num_classes: int | None = None) -> torch.Tensor:
    """Class map (H, W) of scene ``i``: windows of ``tile`` with ``overlap``, softmax
    probabilities blended with border-ramped weights and stitched, then argmax. Only one batch
    of windows is read from the source at a time."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    dev = _device(model, device)
    h, w = source.shape(i)
    th, tw = min(tile, h), min(tile, w)
    stride = tile - overlap
    windows = [(y, x) for y in window_starts(h, th, stride) for x in window_starts(w, tw, stride)]
    weight = _weight_window(th, tw, overlap).to(dev)
    acc: torch.Tensor | None = None
    wsum = torch.zeros(h, w, device=dev)
    for b in range(0, len(windows), batch_size):
        chunk = windows[b:b + batch_size]
        images = torch.stack([torch.from_numpy(np.ascontiguousarray(source.read(i, (y, x, th, tw))[0]))
                              for y, x in chunk]).to(dev)
        logits = model(images).float()
        prob = logits.softmax(1) if logits.shape[1] > 1 else torch.cat(
            [1 - logits.sigmoid(), logits.sigmoid()], 1)
        if acc is None:
            acc = torch.zeros(prob.shape[1], h, w, device=dev)
        for (y, x), p in zip(chunk, prob):
            acc[:, y:y + th, x:x + tw] += p * weight
            wsum[y:y + th, x:x + tw] += weight
    assert acc is not None
    return (acc / wsum).argmax(0)


@torch.no_grad()
def evaluate_tiles(model: nn.Module, data: Any, num_classes: int | None = None, *, tile: int = 512,
                   overlap: int = 64, batch_size: int = 4, device: Any = None,
                   ignore_index: int | None = None, progress: bool = True) -> dict:
    """Full-tile evaluation: every scene of ``data`` (a dataset from ``open_dataset`` or a scene
    source) is predicted whole by ``predict_scene`` and scored against its full mask, as
    Inria's benchmark scores whole 5000x5000 tiles. Returns the ``evaluate`` dict plus
    ``per_scene`` building IoU by scene name."""
    source = getattr(data, "source", data)
    n = _num_classes(model, source, num_classes)
    if ignore_index is None:
        ignore_index = getattr(source, "ignore_index", None)
    dev = _device(model, device)
    confusion = torch.zeros(n, n, dtype=torch.int64)
    per_scene: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(len(source)), desc="tiles", leave=False,
                      disable=_quiet() if progress else True):
            pred = predict_scene(model, source, i, tile, overlap, batch_size=batch_size, device=dev).cpu()
            _, mask = source.read(i)
            one = confusion_update(torch.zeros_like(confusion), pred, torch.from_numpy(np.asarray(mask)),
                                   ignore_index)
            confusion += one
            per_scene[source.name(i)] = metrics_from_confusion(one, ignore_index)["building_iou"]
    finally:
        model.train(was_training)
    out = metrics_from_confusion(_all_reduce(confusion), ignore_index)
    out["per_scene"] = per_scene
    return out
