"""Loops the gates method needs: validation value, gate training, short fine-tuning.

Data are re-iterable collections of `(inputs, targets)` batches (a list or a DataLoader).
The loss is any callable `loss(outputs, targets) -> scalar tensor`; the default is
cross-entropy, which covers segmentation (N, K, H, W) logits against (N, H, W) labels.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .attach import Gates

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EvalFn = Callable[[nn.Module], float]


def _bar_disabled(progress: bool) -> bool | None:
    if not progress or os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return True
    return None


def check_data(data: Any, what: str) -> None:
    """Data must be iterable more than once (we make several passes)."""
    if data is None or not isinstance(data, Iterable):
        raise TypeError(f"fastprune: {what} must be a re-iterable collection of (inputs, targets) batches")
    if isinstance(data, Iterator):
        raise TypeError(f"fastprune: {what} is a one-shot iterator; pass a list or a DataLoader (it is read several times)")


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _batches(data: Iterable, device: torch.device) -> Iterator[tuple[Any, Any]]:
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("fastprune: each batch must be an (inputs, targets) pair")
        x, y = batch
        yield (x.to(device) if torch.is_tensor(x) else x), (y.to(device) if torch.is_tensor(y) else y)


def validation_value(model: nn.Module, data: Iterable, loss: LossFn | None = None,
                     evaluate: EvalFn | None = None) -> float:
    """`evaluate(model)` if given, else the sample-weighted mean loss over `data` in eval mode.

    A NaN result is an error: it would make every tolerance comparison meaningless.
    """
    if evaluate is not None:
        value = float(evaluate(model))
        if math.isnan(value):
            raise ValueError("fastprune: the evaluate callable returned NaN on the validation data")
        return value
    loss = loss or F.cross_entropy
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for x, y in _batches(data, _device(model)):
                n = x.shape[0] if torch.is_tensor(x) else 1
                total += float(loss(model(x), y)) * n
                count += n
    finally:
        model.train(was)
    if count == 0:
        raise ValueError("fastprune: the validation set is empty")
    value = total / count
    if math.isnan(value):
        raise ValueError("fastprune: the validation loss is NaN (the validation data or the model yields NaN)")
    return value


@torch.no_grad()
def _truncate_at_zero(opt: torch.optim.Optimizer, gates: Gates, before: list[torch.Tensor]) -> None:
    for w, prev in zip(gates.weights, before):
        crossed = (prev != 0) & (torch.sign(w) != torch.sign(prev))
        if crossed.any():
            w[crossed] = 0.0
            state = opt.state.get(w, {})
            if "exp_avg" in state:
                state["exp_avg"][crossed] = 0.0


def train_gates(model: nn.Module, gates: Gates, data: Iterable, loss: LossFn | None = None, *, epochs: int = 10,
                lr: float = 0.05, l1: float = 0.0, train_base: bool = False, base_lr: float = 1e-3,
                progress: bool = True) -> list[float]:
    """Train the gates (and, with `train_base`, the model jointly) by backprop on the task loss.

    The objective is loss + l1 * Σ|g| over all gates (sparsity pushes useless gates to 0).
    With l1 > 0 a gate that crosses zero in a step is set to exactly 0 and its Adam momentum
    cleared (truncated L1, as in Tsuruoka et al. 2009): Adam's momentum would otherwise make
    useless gates oscillate around 0 with an amplitude of order lr instead of settling there.
    With frozen base weights the model runs in eval mode (normalisation statistics fixed);
    jointly it runs in train mode. Returns the mean objective per epoch.
    """
    if epochs < 0 or lr <= 0 or l1 < 0:
        raise ValueError(f"fastprune: need epochs >= 0, lr > 0, l1 >= 0 (got {epochs}, {lr}, {l1})")
    loss = loss or F.cross_entropy
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    groups = [{"params": list(gates.parameters()), "lr": lr}]
    if train_base:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": base_lr})
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam(groups)
    was = model.training
    model.train(train_base)
    history = []
    device = _device(model)
    try:
        for _ in tqdm(range(epochs), desc="gates: training", disable=_bar_disabled(progress)):
            total, steps = 0.0, 0
            for x, y in _batches(data, device):
                opt.zero_grad(set_to_none=True)
                obj = loss(model(x), y)
                if l1:
                    obj = obj + l1 * sum(w.abs().sum() for w in gates.weights)
                if not torch.isfinite(obj):
                    raise ValueError("fastprune: the training objective became NaN/inf while training the gates")
                obj.backward()
                before = [w.detach().clone() for w in gates.weights] if l1 else []
                opt.step()
                if l1:
                    _truncate_at_zero(opt, gates, before)
                total += float(obj.detach())
                steps += 1
            history.append(total / max(steps, 1))
    finally:
        model.train(was)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return history


def finetune(model: nn.Module, train_data: Iterable, val_data: Iterable, loss: LossFn | None = None, *,
             epochs: int = 0, lr: float = 1e-3, evaluate: EvalFn | None = None, higher_is_better: bool = False,
             progress: bool = True) -> tuple[float, list[float]]:
    """Fine-tune all weights with Adam, keeping the epoch whose validation value is best.

    Starts from the model as given (epoch 0), so fine-tuning never leaves the model worse on
    the validation data than it was. Returns (best value, value after each epoch).
    """
    if epochs < 0 or lr <= 0:
        raise ValueError(f"fastprune: need epochs >= 0 and lr > 0 (got {epochs}, {lr})")
    loss_fn = loss or F.cross_entropy
    best = validation_value(model, val_data, loss_fn, evaluate)
    history = [best]
    if epochs == 0:
        return best, history
    best_state = copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    device = _device(model)
    for _ in tqdm(range(epochs), desc="gates: fine-tuning", disable=_bar_disabled(progress)):
        model.train()
        for x, y in _batches(train_data, device):
            opt.zero_grad(set_to_none=True)
            obj = loss_fn(model(x), y)
            if not torch.isfinite(obj):
                raise ValueError("fastprune: the fine-tuning loss became NaN/inf")
            obj.backward()
            opt.step()
        value = validation_value(model, val_data, loss_fn, evaluate)
        history.append(value)
        if (value > best) if higher_is_better else (value < best):
            best, best_state = value, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return best, history
