"""How every pruned model of a workflow is reconstructed and fine-tuned (one type for
`compress` and `compare`, so both treat their models alike).

Fine-tuning keeps the weights of its last epoch unless `keep_best` names a validation metric:
under the cosine schedule the last epoch is the better pick on the demo's data (benchmarks/README.md,
"Pruning frontier, fifth session"): keeping the best of 8 epochs by 32 validation tiles cost 0.7
points of test IoU on average and tripled the spread over seeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ..train import fit
from ..train.losses import DISTILL_TEMPERATURE
from ..train.metrics import SEGMENTATION_METRICS
from .allocate import check_allocation

RECONSTRUCTIONS = (None, "fold", "refit")


@dataclass
class Pipeline:
    finetune_epochs: int = 8
    allocation: str = "redundancy"  # how a budget is spread over the layers (allocate.check_allocation)
    reconstruct: str | None = "refit"
    distill: float = 0.5
    temperature: float = DISTILL_TEMPERATURE
    lr: float = 2e-3
    batch_size: int = 8
    stats_batches: int = 8
    exclude: list[str] = field(default_factory=list)
    min_channels: int = 1
    keep_best: str | None = None

    def __post_init__(self) -> None:
        if self.reconstruct is True:
            self.reconstruct = "refit"
        elif self.reconstruct is False:
            self.reconstruct = None
        if self.reconstruct not in RECONSTRUCTIONS:
            raise ValueError(f"fastprune: reconstruct must be 'refit', 'fold' or None, got {self.reconstruct!r}")
        check_allocation(self.allocation)
        if self.finetune_epochs < 0 or self.batch_size < 1 or self.stats_batches < 1 or self.min_channels < 1:
            raise ValueError("fastprune: need finetune_epochs >= 0, batch_size >= 1, stats_batches >= 1, "
                             "min_channels >= 1")
        if not 0 <= self.distill <= 1 or not self.lr > 0 or not self.temperature > 0:
            raise ValueError(f"fastprune: need distill in [0, 1], lr > 0 and temperature > 0 (got {self.distill}, "
                             f"{self.lr}, {self.temperature})")
        if self.keep_best is not None and self.keep_best not in SEGMENTATION_METRICS:
            raise ValueError(f"fastprune: keep_best must be one of {', '.join(SEGMENTATION_METRICS)} or None "
                             f"(the last epoch), got {self.keep_best!r}")
        self.exclude = list(self.exclude)

    def finetune(self, model: nn.Module, train_data: Dataset, val_data: Dataset | None, *, epochs: int, seed: int,
                 teacher: nn.Module | None) -> dict[str, Any]:
        """`fit` `model` in place for `epochs` with this recipe (distillation from `teacher` when
        given; `keep_best` only with `val_data`); returns fit's history."""
        return fit(model, train_data, val_data, epochs=epochs, lr=self.lr, batch_size=self.batch_size, seed=seed,
                   teacher=teacher, distill=self.distill if teacher is not None else 0.0,
                   temperature=self.temperature, keep_best=self.keep_best if val_data is not None else None,
                   progress=False)
