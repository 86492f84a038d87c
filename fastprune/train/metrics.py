"""Segmentation and classification metrics from a confusion matrix (rows: target class,
columns: prediction)."""
from __future__ import annotations

import math

import torch


def check_labels(classes: int, target: torch.Tensor, ignore_index: int | None = None) -> None:
    """ValueError unless every label of `target` (but `ignore_index`) is a class in [0, classes)
    of a model that predicts `classes` classes (one logit: 2)."""
    t = target if ignore_index is None else target[target != ignore_index]
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= max(classes, 2):
        raise ValueError(f"the data has class labels {lo}..{hi} but the model predicts {max(classes, 2)} classes "
                         f"(0..{max(classes, 2) - 1}): use a model made for this data")


def confusion_update(confusion: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                     ignore_index: int | None = None) -> torch.Tensor:
    """Add the (target, pred) pairs of one batch to ``confusion`` (int64, C x C) in place.

    Pixels whose target is ``ignore_index`` or outside [0, C) are skipped.
    """
    c = confusion.shape[0]
    t = target.reshape(-1).to(torch.int64)
    p = pred.reshape(-1).to(torch.int64)
    keep = (t >= 0) & (t < c)
    if ignore_index is not None:
        keep &= t != ignore_index
    idx = t[keep] * c + p[keep].clamp(0, c - 1)
    confusion += torch.bincount(idx, minlength=c * c).reshape(c, c).to(confusion.device)
    return confusion


#: the scalar metrics of `metrics_from_confusion` that one epoch can be chosen by (`keep_best`)
SEGMENTATION_METRICS = ("building_iou", "miou", "pixel_accuracy")


def metrics_from_confusion(confusion: torch.Tensor, ignore_index: int | None = None) -> dict:
    """Pixel accuracy, per-class IoU (NaN where a class is absent from target and prediction),
    mIoU (mean of the defined IoUs, ``ignore_index`` left out), building IoU (class 1: the
    building class of binary aerial masks, of the synthetic multi-class set and of CamVid's
    11 classes), and the confusion matrix as nested lists."""
    cm = confusion.to(torch.float64).cpu()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = [float(tp[k] / union[k]) if union[k] > 0 else math.nan for k in range(cm.shape[0])]
    total = cm.sum()
    defined = [v for k, v in enumerate(iou) if not math.isnan(v) and k != ignore_index]
    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "iou": iou,
        "miou": sum(defined) / len(defined) if defined else math.nan,
        "building_iou": iou[1] if len(iou) > 1 else math.nan,
        "confusion": confusion.to(torch.int64).cpu().tolist(),
        "pixels": int(total),
    }


def classification_metrics(confusion: torch.Tensor) -> dict:
    """Top-1 ``accuracy`` (correct / samples), ``class_accuracy`` (per class: correct / samples
    of that class, NaN for a class without samples), the ``confusion`` matrix as nested lists
    and the number of ``samples``."""
    cm = confusion.to(torch.float64).cpu()
    total, per = cm.sum(), cm.sum(1)
    return {
        "accuracy": float(cm.diag().sum() / total) if total > 0 else math.nan,
        "class_accuracy": [float(cm[k, k] / per[k]) if per[k] > 0 else math.nan for k in range(cm.shape[0])],
        "confusion": confusion.to(torch.int64).cpu().tolist(),
        "samples": int(total),
    }
