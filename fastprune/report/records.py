"""Plain records the report is drawn from: one per model, one per pruned layer, sample tiles.

They hold numbers only (no modules, no tensors except sample arrays), so the report can be
rendered — and tested — without running a model. `summary()` is the summary.json contract.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

SUMMARY_KEYS = ("params", "macs", "latency_ms", "iou", "miou", "pixel_accuracy")
METRIC_KEYS = ("iou", "miou", "pixel_accuracy")
# A classifier's summary: top-1 accuracy in place of the segmentation metrics.
CLASSIFIER_SUMMARY_KEYS = ("params", "macs", "latency_ms", "accuracy")
CLASSIFIER_METRIC_KEYS = ("accuracy",)
# What the report puts first, by task: (record field, how it is named)
HEADLINE = {"segmentation": ("iou", "building IoU"), "classification": ("accuracy", "top-1 accuracy")}


def _finite(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"fastprune: report field '{name}' must be a number, got {type(value).__name__}") from None
    if not math.isfinite(v):
        raise ValueError(f"fastprune: report field '{name}' is not finite ({v})")
    return v


def metrics_from_evaluation(result: Mapping[str, Any]) -> dict[str, float]:
    """Map `fastprune.train.evaluate`'s dict to the report's metric names: a segmentation
    result to iou (building IoU), miou, pixel_accuracy; a classification result to accuracy."""
    try:
        if "accuracy" in result and "building_iou" not in result:
            return {"accuracy": float(result["accuracy"])}
        return {
            "iou": float(result["building_iou"]),
            "miou": float(result["miou"]),
            "pixel_accuracy": float(result["pixel_accuracy"]),
        }
    except KeyError as exc:
        raise ValueError(f"fastprune: evaluation result lacks {exc.args[0]!r}") from None


@dataclass
class ModelResult:
    """One model's whole-model figures: size, cost, CPU latency and (final) metrics: a
    segmentation network's ``iou`` (building), ``miou`` and ``pixel_accuracy``, or a
    classifier's top-1 ``accuracy`` (one kind, not both).

    `before_finetune` holds the metrics of a pruned model right after surgery (None for the
    baseline); `latency` the full measurement record (threads, repeats ...).
    """

    params: int
    macs: int
    latency_ms: float
    iou: float | None = None
    miou: float | None = None
    pixel_accuracy: float | None = None
    before_finetune: dict[str, float] | None = None
    latency: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None

    def __post_init__(self) -> None:
        self.params = int(self.params)
        self.macs = int(self.macs)
        if self.params < 0 or self.macs < 0:
            raise ValueError("fastprune: params and MACs must be >= 0")
        seg = [getattr(self, k) is not None for k in METRIC_KEYS]
        if (self.accuracy is None) != all(seg) or (any(seg) and not all(seg)):
            raise ValueError("fastprune: a model result holds iou, miou and pixel_accuracy (segmentation) "
                             "or accuracy (classification)")
        for k in ("latency_ms",) + self.metric_keys:
            setattr(self, k, _finite(k, getattr(self, k)))
        if self.before_finetune is not None:
            missing = [k for k in self.metric_keys if k not in self.before_finetune]
            if missing:
                raise ValueError(f"fastprune: before_finetune lacks {missing}")
            self.before_finetune = {k: _finite(k, v) for k, v in self.before_finetune.items()}

    @property
    def task(self) -> str:
        return "classification" if self.accuracy is not None else "segmentation"

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return CLASSIFIER_METRIC_KEYS if self.task == "classification" else METRIC_KEYS

    @property
    def headline(self) -> float:
        """The metric the report puts first: building IoU, or a classifier's top-1 accuracy."""
        return getattr(self, HEADLINE[self.task][0])

    def summary(self) -> dict[str, Any]:
        """The summary.json entry: the contract keys, then what else is known."""
        keys = CLASSIFIER_SUMMARY_KEYS if self.task == "classification" else SUMMARY_KEYS
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        if self.before_finetune is not None:
            out["before_finetune"] = dict(self.before_finetune)
        if self.latency is not None:
            out["latency"] = dict(self.latency)
        out.update(self.extra)
        return out


@dataclass
class LayerRecord:
    """What one method did to one layer (a producer of output channels)."""

    channels: int
    kept: int
    retained_variance: float | None = None
    params_before: int | None = None
    params_after: int | None = None
    macs_before: int | None = None
    macs_after: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= int(self.kept) <= int(self.channels):
            raise ValueError(f"fastprune: a layer keeps {self.kept} of {self.channels} channels")
        self.channels, self.kept = int(self.channels), int(self.kept)


@dataclass
class Sample:
    """One tile: image (3,H,W) or (H,W,3), ground-truth mask (H,W), predictions by model name."""

    image: np.ndarray
    mask: np.ndarray
    predictions: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.mask = np.asarray(self.mask)
        if self.image.ndim != 3 or 3 not in (self.image.shape[0], self.image.shape[-1]):
            raise ValueError(f"fastprune: a sample image must be (3,H,W) or (H,W,3), got {self.image.shape}")
        if self.image.shape[0] == 3 and self.image.shape[-1] != 3:
            self.image = np.moveaxis(self.image, 0, -1)
        hw = self.image.shape[:2]
        if self.mask.shape != hw:
            raise ValueError(f"fastprune: sample mask {self.mask.shape} does not match image {hw}")
        self.predictions = {k: np.asarray(v) for k, v in self.predictions.items()}
        for k, v in self.predictions.items():
            if v.shape != hw:
                raise ValueError(f"fastprune: prediction '{k}' {v.shape} does not match image {hw}")


def summary(models: Mapping[str, ModelResult]) -> dict[str, dict[str, Any]]:
    """summary.json: key 'baseline' and one key per method, each with the contract keys, and
    for a pruned model the reductions and the change of the headline metric (``iou_change``,
    or ``accuracy_change`` for a classifier)."""
    if "baseline" not in models:
        raise ValueError("fastprune: the report needs a 'baseline' model result")
    out = {}
    for name, res in models.items():
        if not isinstance(res, ModelResult):
            raise TypeError(f"fastprune: model result '{name}' must be a ModelResult")
        base = models["baseline"]
        if res.task != base.task:
            raise ValueError(f"fastprune: model result '{name}' is a {res.task} result, the baseline a {base.task} one")
        entry = res.summary()
        if name != "baseline":
            entry["params_reduction"] = 1.0 - res.params / base.params if base.params else 0.0
            entry["macs_reduction"] = 1.0 - res.macs / base.macs if base.macs else 0.0
            entry[f"{HEADLINE[res.task][0]}_change"] = res.headline - base.headline
        out[name] = entry
    return out
