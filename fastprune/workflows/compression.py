"""Iterative compression: k steps toward a MACs or parameter budget on a geometric schedule; each
step re-collects statistics on the current model, allocates per-layer counts by redundancy,
selects and removes channels layer by layer with reconstruction, recalibrates batch norm and
fine-tunes. The total fine-tuning epochs are one parameter, so it compares fairly with one-shot.

When nothing has been fine-tuned before the last step (the default: all epochs after it), the
steps decide the per-layer counts and the last step's counts are selected and reconstructed once,
on the input model's statistics: the staged network's allocation, the trained network's channels.
Selecting in stages on networks already pruned and refit lost 1.8 points of IoU after fine-tuning
on the demo U-Net at 90 % (benchmarks/README.md, "fourth session").

With `out`, every finished step's model and statistics are written (atomically) before the
next starts, and a later call with the same arguments resumes after the last finished step; a
call with different arguments is refused (nothing is overwritten).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .._documents import changed_argument, weights_digest
from .._files import atomic_write
from ..graph.cost import count
from ..models.unet import UNet, level_layers, remove_levels
from ..planning.depth import levels_to_remove
from ..planning.plan import Plan
from ..stats.collect import collect
from ..stats.statistics import Statistics
from ..surgery import load_pruned, save_pruned
from ..train import evaluate
from .allocate import budget_counts, producer_counts
from .layerwise import needs_patch_gram, prune_layerwise
from .pipeline import Pipeline

FORMAT = "fastprune.compress"
VERSION = 1
STATE_FILE = "compress.json"


@dataclass
class CompressConfig:
    """What a compression run does; a resumed run must match it exactly."""
    method: str = "subset"
    target_macs: float | None = None
    target_params: float | None = None
    steps: int = 3
    levels: bool = False
    level_threshold: float = 0.75
    finetune_between: bool = False
    seed: int = 0
    pipeline: Pipeline = field(default_factory=Pipeline)

    def check(self) -> None:
        if (self.target_macs is None) == (self.target_params is None):
            raise ValueError("fastprune: compress needs exactly one of target_macs= or target_params=")
        target = self.target
        if not 0 < target < 1:
            raise ValueError(f"fastprune: the target is the fraction removed and must be in (0, 1), got {target}")
        if self.steps < 1:
            raise ValueError(f"fastprune: compress needs steps >= 1, got {self.steps}")

    @property
    def target(self) -> float:
        return float(self.target_macs if self.target_macs is not None else self.target_params)

    @property
    def which(self) -> str:
        return "macs" if self.target_macs is not None else "params"


def schedule(target: float, steps: int) -> list[float]:
    """Removed fraction of the original cost after each step: the kept fraction shrinks by the
    same factor every step, (1 - target)^(i / steps)."""
    return [1.0 - (1.0 - target) ** ((i + 1) / steps) for i in range(steps)]


def epochs_per_step(total: int, steps: int, between: bool = False) -> list[int]:
    """`total` fine-tuning epochs over the steps: all after the last step, or with `between`
    spread over the steps (the later steps get the remainder)."""
    if not between:
        return [0] * (steps - 1) + [total]
    base, extra = divmod(total, steps)
    return [base + (1 if i >= steps - extra else 0) for i in range(steps)]


class _Run:
    """The run folder: compress.json (arguments, finished steps) and step-<i>/ (model, stats)."""

    def __init__(self, out: str | os.PathLike | None, config: CompressConfig, model: nn.Module) -> None:
        self.out = Path(out) if out is not None else None
        self.args = {**asdict(config), "model": weights_digest(model)}
        self.steps: list[dict[str, Any]] = []
        self.levels_removed = 0
        if self.out is None:
            return
        state = self.out / STATE_FILE
        if state.exists():
            doc = json.loads(state.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"fastprune: {state} is not a compress state file")
            old = doc.get("arguments", {})
            change = changed_argument(old, self.args)
            if change:
                k, what = change
                if k == "model":  # an earlier fastprune wrote a 64-digit fingerprint of another form
                    what = "the input model" if len(str(old.get(k))) == len(self.args[k]) else \
                        "the input model's fingerprint, written by an earlier version of fastprune"
                raise ValueError(f"fastprune: {self.out} holds a compress run with different arguments: {what}; "
                                 "resume with the same arguments or choose a new output folder")
            self.steps = doc.get("steps", [])
            self.levels_removed = int(doc.get("levels_removed", 0))
        elif self.out.exists() and any(self.out.iterdir()):
            raise ValueError(f"fastprune: {self.out} exists and is not a compress run folder; choose a new one")

    def save(self, i: int, model: nn.Module, plan: Plan, stats: Statistics, record: dict[str, Any]) -> None:
        self.steps.append(record)
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        final = self.out / f"step-{i + 1}"
        tmp = self.out / f".step-{i + 1}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_pruned(model, plan, tmp / "model")
        stats.save(tmp / "stats.fps")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(self.out / STATE_FILE, json.dumps({"format": FORMAT, "version": VERSION, "arguments": self.args,
                                                        "levels_removed": self.levels_removed, "steps": self.steps},
                                                       indent=1))

    def restore(self, original: nn.Module) -> tuple[nn.Module, Plan] | None:
        if self.out is None or not self.steps:
            return None
        start = _with_levels(original, self.levels_removed)
        path = self.out / f"step-{len(self.steps)}" / "model"
        model = load_pruned(lambda: copy.deepcopy(start), path)
        return model, Plan.load(path / "plan.json")


def _with_levels(model: nn.Module, n: int) -> nn.Module:
    return remove_levels(model, n) if n else model


def _levels_to_remove(model: nn.Module, stats: Statistics, config: CompressConfig) -> int:
    """Deepest U-Net levels whose layers the statistics judge redundant (`fastprune.planning.depth`)."""
    if not config.levels or not isinstance(model, UNet) or not stats.meta.get("covariance", True):
        return 0
    layers = level_layers(model)
    if not {n for names in layers.values() for n in names} & {g.producers[0].module for g in stats.groups.values()}:
        return 0
    return levels_to_remove(model, stats, layers, threshold=config.level_threshold)[0]


def _compose(prev: Plan | None, step: Plan | None) -> Plan | None:
    """Kept original indices after `step` is applied to a model already pruned by `prev`."""
    if step is None:
        return prev
    if prev is None:
        return step
    keep = {n: list(v) for n, v in prev.keep.items()}
    channels = dict(prev.channels)
    for name, kept in step.keep.items():
        if name in keep:
            keep[name] = [keep[name][i] for i in kept]
        else:
            keep[name], channels[name] = list(kept), step.channels[name]
    return Plan(keep=keep, channels=channels, meta={**prev.meta, **step.meta})


def _channels(stats: Statistics) -> dict[str, int]:
    """Every prunable group's current channel count, keyed by its first producer."""
    return {g.producers[0].module: g.channels for g in stats.groups.values() if g.prunable}


def _prune(model: nn.Module, loader: DataLoader, counts: dict[str, int], config: CompressConfig, pipe: Pipeline,
           stats: Statistics | None = None) -> tuple[nn.Module, Plan | None]:
    """`prune_layerwise` to `counts` ({producer: kept channels}), and the plan of all it removed
    (kept indices of `model`'s channels; None when nothing was)."""
    plans: list[Plan] = []
    pruned = prune_layerwise(model, loader, counts, method=config.method, reconstruct=pipe.reconstruct,
                             stats_batches=pipe.stats_batches, options={"seed": config.seed}, plans=plans,
                             stats=stats)
    plan = None
    for p in plans:
        plan = _compose(plan, p)
    return pruned, plan


def compress(model: nn.Module, train_data: Dataset, val_data: Dataset | None = None, *, method: str = "subset",
             target_macs: float | None = None, target_params: float | None = None, steps: int = 3,
             finetune_epochs: int = Pipeline.finetune_epochs, teacher: nn.Module | None = None,
             reconstruct: bool | str | None = True, distill: float = Pipeline.distill,
             temperature: float = Pipeline.temperature, lr: float = Pipeline.lr, batch_size: int = Pipeline.batch_size,
             stats_batches: int = Pipeline.stats_batches, exclude: Sequence[str] = (),
             min_channels: int = Pipeline.min_channels, allocation: str = Pipeline.allocation,
             levels: bool = False, level_threshold: float = 0.75,
             keep_best: str | None = Pipeline.keep_best, finetune_between: bool = False, seed: int = 0,
             out: str | os.PathLike | None = None,
             example_inputs: Any = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Compress `model` toward `target_macs` / `target_params` (fraction removed) in `steps` steps.

    Each step: statistics of the current model (`stats_batches` batches of `train_data`); on the
    first step, with `levels`, U-Net levels that `fastprune.planning.depth.levels_to_remove` judges redundant are removed
    (off by default: on the demo U-Net it removed the bottleneck level and lost ~20 points of IoU
    before fine-tuning, benchmarks/README.md); per-layer counts
    by `allocation` (`budget_counts`: "redundancy", one PCA tau for all layers; "marginal";
    "uniform") for this step's share of the budget; layer-by-layer selection by `method` with
    reconstruction (`reconstruct`: True or "refit" = least-squares refit on the patch Gram,
    "fold" = covariance fold, False = none); at the last step, when no epochs came before it, the
    final counts are selected and reconstructed on the input model instead (history: the step's
    "selected_on");
    batch-norm recalibration; `finetune_epochs` of fine-tuning with `teacher` (distillation
    weight `distill` at `temperature`; the last epoch's weights, or with `keep_best` the best
    validation epoch's), all after the last step, or spread over the steps with `finetune_between`
    (on the demo U-Net at 90% spreading them lost ~3 points, benchmarks/README.md). Returns (model, history); history["steps"] holds
    each step's cost and validation metrics before and after fine-tuning.
    """
    pipe = Pipeline(finetune_epochs=int(finetune_epochs), reconstruct=reconstruct, distill=float(distill),
                    temperature=float(temperature), lr=float(lr), batch_size=int(batch_size),
                    stats_batches=int(stats_batches),
                    exclude=list(exclude), min_channels=int(min_channels), keep_best=keep_best,
                    allocation=allocation)
    config = CompressConfig(method=method, target_macs=target_macs, target_params=target_params, steps=int(steps),
                            levels=bool(levels), level_threshold=float(level_threshold), seed=int(seed),
                            finetune_between=bool(finetune_between),
                            pipeline=pipe)
    config.check()
    run = _Run(out, config, model)
    loader = DataLoader(train_data, batch_size=pipe.batch_size, shuffle=False)
    example = example_inputs if example_inputs is not None else next(iter(loader))[0][:1]
    base_cost = count(model, example)
    base_value = base_cost.macs if config.which == "macs" else base_cost.params
    goals = schedule(config.target, config.steps)
    epochs = epochs_per_step(pipe.finetune_epochs, config.steps, config.finetune_between)
    restored = run.restore(model)
    current, composite = restored if restored is not None else (model, None)
    start_stats = None  # statistics of the input model (levels removed), when this call collected them
    t0 = time.perf_counter()
    bar = tqdm(total=config.steps, initial=len(run.steps), desc="compress", unit="step",
               disable=True if (not progress or os.environ.get("TQDM_DISABLE")) else None)
    for i in range(len(run.steps), config.steps):
        t_step = time.perf_counter()
        gram = needs_patch_gram(config.method, pipe.reconstruct)
        stats = collect(current, loader, max_batches=pipe.stats_batches, patch_gram=gram, progress=False)
        record: dict[str, Any] = {"step": i + 1, "goal": goals[i]}
        if i == 0:
            n = _levels_to_remove(current, stats, config)
            if n:
                current = remove_levels(current, n)
                run.levels_removed = n
                record["levels_removed"] = n
                stats = collect(current, loader, max_batches=pipe.stats_batches, patch_gram=gram, progress=False)
            start_stats = stats
        now = count(current, example)
        now_value = now.macs if config.which == "macs" else now.params
        share = 1.0 - (1.0 - goals[i]) * base_value / now_value  # of the current model's cost
        counts: dict[str, int] = {}
        if share > 0:
            found, search = budget_counts(current, stats, share, config.which, pipe.allocation, pipe.exclude,
                                          pipe.min_channels, stats.example_inputs(current))
            if "knob" in search:
                record["tau"] = search["knob"]["value"]
            counts = producer_counts(stats, found)
        if i == config.steps - 1 and not any(epochs[:-1]) and (counts or composite is not None):
            # nothing fine-tuned yet: the final counts are selected and reconstructed once, on the
            # statistics of the input model (its levels removed), not on those of the staged one
            start = current if i == 0 else _with_levels(model, run.levels_removed)
            current, composite = _prune(start, loader, {**_channels(stats), **counts}, config, pipe, start_stats)
            record["selected_on"] = "input model"
        elif counts:
            current, step_plan = _prune(current, loader, counts, config, pipe, stats)
            composite = _compose(composite, step_plan)
        after = count(current, example)
        record.update(macs=after.macs, params=after.params,
                      macs_removed=1 - after.macs / base_cost.macs, params_removed=1 - after.params / base_cost.params)
        if val_data is not None:
            record["before_finetune"] = evaluate_metrics(current, val_data, pipe.batch_size)
        if epochs[i] > 0:  # the first fine-tuning uses `seed`, as one-shot's does (compare pairs by seed)
            pipe.finetune(current, train_data, val_data, epochs=epochs[i],
                          seed=config.seed + sum(e > 0 for e in epochs[:i]), teacher=teacher)
        if val_data is not None:
            record["after_finetune"] = evaluate_metrics(current, val_data, pipe.batch_size)
        record["seconds"] = time.perf_counter() - t_step
        if composite is None:  # nothing removed yet: an identity plan keeps the run resumable
            composite = _identity_plan(current, stats)
        run.save(i, current, composite, collect(current, loader, max_batches=pipe.stats_batches, progress=False)
                 if out is not None else stats, record)
        bar.update(1)
        bar.set_postfix(macs_removed=f"{record['macs_removed']:.1%}")
    bar.close()
    history = {"config": asdict(config), "levels_removed": run.levels_removed, "steps": run.steps,
               "base": {"macs": base_cost.macs, "params": base_cost.params},
               "seconds": time.perf_counter() - t0}
    current.eval()
    return current, history


def _identity_plan(model: nn.Module, stats: Statistics) -> Plan:
    modules = dict(model.named_modules())
    keep, channels = {}, {}
    for g in stats.groups.values():
        for p in g.producers:
            n = int(getattr(modules[p.module], "out_channels", len(p.indices)))
            keep[p.module], channels[p.module] = list(range(n)), n
    return Plan(keep=keep, channels=channels)


def evaluate_metrics(model: nn.Module, data: Dataset, batch_size: int) -> dict[str, float]:
    """`evaluate`'s scalar metrics (building_iou, miou, pixel_accuracy ...), quietly."""
    out = evaluate(model, data, batch_size=batch_size, progress=False)
    return {k: float(v) for k, v in out.items() if k != "confusion" and isinstance(v, (int, float))}


__all__ = ["CompressConfig", "compress", "epochs_per_step", "evaluate_metrics", "schedule"]
