"""Losses for segmentation fine-tuning: cross-entropy, soft Dice, distillation."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .metrics import check_labels


def two_class(logits: torch.Tensor) -> torch.Tensor:
    """One-logit binary outputs (TernausNet) as two-class logits [0, z]: softmax gives
    (1 - sigmoid(z), sigmoid(z)), so cross-entropy on them is exactly binary cross-entropy."""
    return torch.cat([torch.zeros_like(logits), logits], 1) if logits.shape[1] == 1 else logits


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
              eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient (softmax probabilities vs one-hot)."""
    logits = two_class(logits)
    c = logits.shape[1]
    prob = logits.float().softmax(1)
    valid = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target)).clamp(0, c - 1)
    onehot = F.one_hot(t, c).permute(0, 3, 1, 2).to(prob.dtype)
    v = valid.unsqueeze(1).to(prob.dtype)
    inter = (prob * onehot * v).sum((0, 2, 3))
    denom = ((prob + onehot) * v).sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice: float = 0.0,
                      ignore_index: int | None = None,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (+ ``dice`` x Dice loss); one-logit outputs get binary cross-entropy.
    Logits (N, C) with labels (N,) (a classifier) take cross-entropy alone."""
    if dice and logits.ndim == 2:
        raise ValueError("fastprune: the Dice loss is for segmentation masks, not class labels")
    logits = two_class(logits)
    check_labels(logits.shape[1], target, ignore_index)
    ce = F.cross_entropy(logits.float(), target, weight=class_weights,
                         ignore_index=-100 if ignore_index is None else ignore_index)
    return ce + dice * dice_loss(logits, target, ignore_index) if dice else ce


#: distillation temperature of every fine-tuning by default (`fit`, the CLI, compare/compress,
#: the demo): T = 1, pixel-wise KL to the teacher's own class probabilities as in the segmentation
#: distillation literature. On the demo's U-Net pruned to 10 % of its MACs it ends 0.7 points of
#: test IoU above T = 2 (10 seeds, paired; benchmarks/README.md "Pruning frontier, fifth session")
DISTILL_TEMPERATURE = 1.0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                      temperature: float = DISTILL_TEMPERATURE) -> torch.Tensor:
    """Per-pixel KL(teacher || student) of temperature-softened class distributions, times T^2
    (Hinton et al., 2015), averaged over pixels."""
    t = temperature
    student, teacher = two_class(student), two_class(teacher)
    log_s = F.log_softmax(student.float() / t, dim=1)
    log_t = F.log_softmax(teacher.float() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    return kl.mean() * t * t
