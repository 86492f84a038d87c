"""``fit``: the fine-tuning loop that brings a (pruned) segmentation network back to accuracy."""
from __future__ import annotations

import copy
import functools
import inspect
import math
import os
import sys
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from .checkpoint import has_checkpoint, load_best, load_checkpoint, rng_states, save_checkpoint, set_rng_states
from .evaluate import evaluate
from .losses import DISTILL_TEMPERATURE, distillation_loss, segmentation_loss
from .schedule import warmup_cosine

_OPTIMIZERS = ("adamw", "sgd")


def _quiet(progress: bool) -> bool | None:
    return True if (not progress or os.environ.get("TQDM_DISABLE")) else None


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One log line per epoch (on a terminal beside the bar, in a log file alone)."""
    val = record.get("val") or {}
    shown = ", ".join(f"{k} {100 * v:.2f}%" for k, v in val.items()
                      if k in ("building_iou", "miou", "accuracy") and isinstance(v, float))
    return (f"epoch {record['epoch'] + 1}/{epochs}: loss {record['loss']:.4f}"
            + (f", val {shown}" if shown else "") + f" ({record['seconds']:.0f} s)")


def _dist() -> tuple[bool, int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum); no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def _seeded(train: Callable[..., dict]) -> Callable[..., dict]:
    """Runs `train` with torch's generators seeded by its ``seed``: the randomness inside the
    model (dropout, stochastic layers) then follows the seed, not the caller's generator state,
    which torch seeds afresh in every process (a run with dropout differed from process to
    process). The caller's CPU state (and the CUDA states of initialised devices) is restored
    afterwards; a resumed run restores its checkpoint's states inside."""
    default = inspect.signature(train).parameters["seed"].default

    @functools.wraps(train)
    def run(*args: Any, **kwargs: Any) -> dict:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(kwargs.get("seed", default))
            return train(*args, **kwargs)
    return run


@_seeded
def fit(model: nn.Module, train_data: Dataset, val_data: Dataset | None = None, *, epochs: int = 10,
        lr: float = 1e-3, batch_size: int = 8, optimizer: str = "adamw", weight_decay: float = 1e-4,
        momentum: float = 0.9, warmup: float = 0.05, min_lr: float = 0.01, dice: float = 0.0,
        class_weights: torch.Tensor | None = None, ignore_index: int | None = None,
        grad_clip: float | None = 1.0, amp: bool = True, device: Any = None, num_workers: int = 0,
        shuffle: bool = True, seed: int = 0, teacher: nn.Module | None = None, distill: float = 0.5,
        temperature: float = DISTILL_TEMPERATURE, checkpoint: str | os.PathLike | None = None, resume: bool = True,
        max_steps: int | None = None, time_limit: float | None = None, keep_best: str | None = None,
        num_classes: int | None = None, progress: bool = True,
        callback: Callable[[dict], None] | None = None, resume_key: dict[str, Any] | None = None) -> dict:
    """Train ``model`` in place on ``train_data`` (Dataset of (image, mask)); returns the history.

    - Loss: cross-entropy (+ ``dice`` x soft Dice); with a ``teacher`` (e.g. the unpruned model)
      ``(1 - distill) x task + distill x`` temperature-softened KL to the teacher's logits.
    - ``optimizer``: "adamw" or "sgd"; lr: linear warm-up over ``warmup`` (fraction of steps if
      < 1, else steps) then cosine to ``min_lr`` x lr; gradient norm clipped to ``grad_clip``.
    - AMP (fp16 autocast + grad scaling) when ``amp`` and the device is CUDA.
    - ``checkpoint``: a folder written after every epoch; with ``resume`` an existing one is
      loaded first and training continues after its last epoch, exactly as if uninterrupted
      (weights, optimizer, scheduler, the best epoch so far, the data order and the RNG states
      are restored). Resuming with other options, another size of ``train_data`` or another
      ``resume_key`` (the caller's name for the data, e.g. its SPEC) is refused.
    - Under ``torch.distributed`` (initialised by the caller) the model is wrapped in DDP and
      each rank sees its share of ``train_data``.
    - ``max_steps`` / ``time_limit`` (seconds) stop early (the schedule is laid out over
      ``epochs``, or over ``max_steps`` when given).
    - ``keep_best``: a metric of ``evaluate`` (e.g. "building_iou", "miou"); the weights of
      the best validation epoch are restored at the end.

    History: ``{"epochs": [{"epoch", "loss", "lr", "seconds", "val"?}], "steps", "stopped"}``.
    """
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"fit: optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"fit: need epochs >= 1, batch_size >= 1, lr > 0 (got {epochs}, {batch_size}, {lr})")
    if not 0 <= distill <= 1:
        raise ValueError(f"fit: distill must be in [0, 1], got {distill}")
    if keep_best is not None and val_data is None:
        raise ValueError("fit: keep_best needs val_data")
    if ignore_index is None:
        ignore_index = getattr(train_data, "ignore_index", None)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    teacher_was_training = teacher is not None and teacher.training
    if teacher is not None:
        teacher.to(dev).eval()  # its logits are taken under no_grad; its parameters are left as they were
    distributed, rank, world = _dist()
    sampler = DistributedSampler(train_data, world, rank, shuffle=shuffle, seed=seed) if distributed else None
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=shuffle and sampler is None,
                        sampler=sampler, num_workers=num_workers, drop_last=len(train_data) >= batch_size * world,
                        generator=gen, pin_memory=dev.type == "cuda")
    if len(loader) == 0:
        raise ValueError("fit: training data yields no batches")
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    total = max_steps if max_steps is not None else epochs * len(loader)
    warm = int(warmup * total) if warmup < 1 else int(warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm, min_lr))
    use_amp = amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    cw = class_weights.to(dev) if class_weights is not None else None

    history: dict[str, Any] = {"epochs": [], "steps": 0, "stopped": None}
    start_epoch = 0
    best_value, best_state = -math.inf, None
    run = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer,
           "weight_decay": weight_decay, "momentum": momentum, "warmup": warmup, "min_lr": min_lr, "dice": dice,
           "grad_clip": grad_clip, "amp": use_amp, "shuffle": shuffle, "seed": seed, "distill": distill if teacher else None,
           "temperature": temperature if teacher else None, "max_steps": max_steps, "keep_best": keep_best,
           "samples": len(train_data), "world": world, **(resume_key or {})}
    if checkpoint is not None and resume and has_checkpoint(checkpoint):
        meta = load_checkpoint(checkpoint, model, opt, sched)
        differ = sorted(k for k in set(run) | set(meta.get("run") or {}) if (meta.get("run") or {}).get(k) != run.get(k))
        if differ:
            had = meta.get("run") or {}
            raise ValueError(f"fit: checkpoint {checkpoint} was made with other options ("
                             + ", ".join(f"{k}={had.get(k)!r} there, {run.get(k)!r} now" for k in differ)
                             + "): resume with the same ones, or start afresh")
        history = meta.get("history", history)
        start_epoch = int(meta.get("epoch", -1)) + 1
        set_rng_states(meta.get("rng"), gen)
        if meta.get("best_value") is not None:
            best_value, best_state = float(meta["best_value"]), load_best(checkpoint)
    t0 = time.perf_counter()
    step = history["steps"]
    for epoch in range(start_epoch, epochs):
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        loss_sum, batches, t_epoch = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=_quiet(progress) if rank == 0 else True)
        for image, mask in bar:
            image, mask = image.to(dev, non_blocking=True), mask.to(dev, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = net(image)
                loss = segmentation_loss(logits, mask, dice, ignore_index, cw)
                if teacher is not None and distill > 0:
                    with torch.no_grad():
                        t_logits = teacher(image)
                    loss = (1 - distill) * loss + distill * distillation_loss(logits, t_logits, temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fit: non-finite loss at epoch {epoch + 1}, step {step + 1}: the training "
                                         "diverged (a lower learning rate may help) or the data hold NaN/inf")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            loss_sum += float(loss.detach())
            batches += 1
            bar.set_postfix(loss=f"{loss_sum / batches:.4f}")
            if (max_steps is not None and step >= max_steps) or \
                    (time_limit is not None and time.perf_counter() - t0 >= time_limit):
                history["stopped"] = "max_steps" if max_steps is not None and step >= max_steps else "time_limit"
                break
        record: dict[str, Any] = {"epoch": epoch, "loss": loss_sum / max(1, batches),
                                  "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t_epoch}
        if val_data is not None:
            record["val"] = {k: v for k, v in evaluate(model, val_data, num_classes, batch_size=batch_size,
                                                        device=dev, ignore_index=ignore_index,
                                                        progress=progress).items() if k != "confusion"}
            if keep_best is not None:
                if keep_best not in record["val"]:
                    raise ValueError(f"fit: keep_best={keep_best!r} is not a metric of evaluate")
                value = record["val"][keep_best]
                if value > best_value:
                    best_value, best_state = value, copy.deepcopy(model.state_dict())
        history["epochs"].append(record)
        history["steps"] = step
        if progress and rank == 0:
            tqdm.write(epoch_line(record, epochs), file=sys.stderr)
        if checkpoint is not None and rank == 0:
            save_checkpoint(checkpoint, model, opt, sched, epoch=epoch, history=history, run=run,
                            rng=rng_states(gen), best=best_state,
                            best_value=best_value if best_state is not None else None)
        if callback is not None:
            callback(record)
        if history["stopped"]:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        history["best"] = {keep_best: best_value}
    model.eval()
    if teacher_was_training:
        teacher.train()
    return history
