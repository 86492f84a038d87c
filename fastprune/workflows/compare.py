"""The methods x budgets x seeds grid: every arm prunes the same trained model to the same
per-layer allocation (counts for the budget by the pipeline's allocation), selects by its
method, reconstructs, and is fine-tuned for the same number of epochs; building IoU before and after fine-tuning.
Iterative arms (`NAME:steps=N`, `compress`) allocate at every step and aim at the fraction the
one-shot allocation removes (not the nominal target), so that every arm of a budget lands at the
same cost within the budget search's granularity."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..criteria import names, seeded
from ..graph.cost import count
from ..stats.collect import collect
from .allocate import budget_counts, producer_counts
from .compression import compress, evaluate_metrics
from .layerwise import prune_layerwise
from .pipeline import Pipeline


@dataclass(frozen=True)
class Arm:
    """One competitor: a selection criterion, one-shot (steps=1) or iterative (steps > 1)."""
    method: str
    steps: int = 1

    @property
    def label(self) -> str:
        return self.method if self.steps == 1 else f"{self.method}:steps={self.steps}"

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """"subset" or "subset:steps=3"."""
        name, _, rest = str(text).partition(":")
        steps = 1
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if key.strip() != "steps" or not eq or not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"fastprune: bad method {text!r}: expected NAME or NAME:steps=N (N >= 1)")
            steps = int(value)
        if name not in names():
            raise ValueError(f"fastprune: unknown method {name!r} in {text!r}; choose one of {', '.join(names())}")
        return cls(name, steps)


@dataclass
class GridConfig:
    arms: list[Arm]
    targets: list[float]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    which: str = "macs"
    pipeline: Pipeline = field(default_factory=Pipeline)


def check_targets(model: nn.Module, stats: Any, config: GridConfig) -> dict[float, tuple[dict[str, int], float]]:
    """Per-layer counts for every budget and the fraction they remove (the budget search lands
    within a point of the target); ValueError for a budget the model cannot reach."""
    out = {}
    for t in config.targets:
        counts, search = budget_counts(model, stats, t, config.which, config.pipeline.allocation,
                                       config.pipeline.exclude, config.pipeline.min_channels)
        out[t] = producer_counts(stats, counts), float(search["reached"])
    return out


def config_dict(config: GridConfig) -> dict[str, Any]:
    """The grid's configuration as JSON-able values (arms by their labels)."""
    cfg = asdict(config)
    cfg["arms"] = [a.label for a in config.arms]
    return cfg


def run_grid(model: nn.Module, train_data: Dataset, val_data: Dataset, test_data: Dataset | None,
             config: GridConfig, log: Callable[[str], None] = lambda s: None, done: Sequence[dict[str, Any]] = (),
             on_row: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> dict[str, Any]:
    """Run every arm x budget x seed; returns {"config", "baseline", "rows"} (JSON-able).
    `done`: rows of an interrupted run of the same grid, kept instead of run again; `on_row` is
    called with the rows so far after every new row (where a caller saves them)."""
    if not config.arms or not config.targets or not config.seeds:
        raise ValueError("fastprune: compare needs at least one method, one budget and one seed")
    for what, values in (("method", [a.label for a in config.arms]), ("budget", config.targets),
                         ("seed", config.seeds)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:  # a repeated seed would count one run twice in the mean and shrink the sd
            raise ValueError(f"fastprune: compare: {what} {', '.join(map(str, twice))} given more than once")
    test = test_data if test_data is not None else val_data
    pipe = config.pipeline
    loader = DataLoader(train_data, batch_size=pipe.batch_size, shuffle=False)
    stats = collect(model, loader, max_batches=pipe.stats_batches, progress=False)
    allocation = check_targets(model, stats, config)
    example = next(iter(loader))[0][:1]
    base = count(model, example)
    baseline = {"macs": base.macs, "params": base.params, **evaluate_metrics(model, test, pipe.batch_size)}
    teacher = copy.deepcopy(model).eval()
    rows = []
    pruned_once: dict[tuple, tuple[nn.Module, dict[str, float]]] = {}
    finished = {(r["method"], r["target"], r["seed"]): r for r in done}
    for target in config.targets:
        for arm in config.arms:
            for seed in config.seeds:
                if (arm.label, target, seed) in finished:
                    rows.append(finished[arm.label, target, seed])
                    log(f"{arm.label:>16} target {target:.0%} seed {seed}: done in the interrupted run")
                    continue
                t0 = time.perf_counter()
                counts, reached = allocation[target]
                if arm.steps == 1:
                    key = (target, arm.method, seed if seeded(arm.method) else None)
                    if key not in pruned_once:  # a seed-free selection is pruned once, fine-tuned per seed
                        once = prune_layerwise(model, loader, counts, method=arm.method,
                                               reconstruct=pipe.reconstruct, stats_batches=pipe.stats_batches,
                                               options={"seed": seed})
                        pruned_once = {key: (once, evaluate_metrics(once, test, pipe.batch_size))}
                    pruned, before = copy.deepcopy(pruned_once[key][0]), pruned_once[key][1]
                    if pipe.finetune_epochs > 0:
                        pipe.finetune(pruned, train_data, val_data, epochs=pipe.finetune_epochs, seed=seed,
                                      teacher=teacher)
                else:
                    # aimed at the cost the one-shot arms land on, not at the nominal target: the
                    # arms of one budget are compared at the same cost
                    kw = {"target_macs" if config.which == "macs" else "target_params": reached}
                    pruned, _ = compress(model, train_data, val_data, method=arm.method, steps=arm.steps,
                                         teacher=teacher, seed=seed, progress=False, **asdict(pipe), **kw)
                    before = None  # iterative: fine-tuning happens between steps
                after = evaluate_metrics(pruned, test, pipe.batch_size)
                cost = count(pruned, example)
                row = {"method": arm.label, "target": target, "seed": seed,
                       "macs": cost.macs, "params": cost.params,
                       "macs_removed": 1 - cost.macs / base.macs, "params_removed": 1 - cost.params / base.params,
                       "iou_before": None if before is None else before["building_iou"],
                       "iou": after["building_iou"], "miou": after.get("miou"),
                       "seconds": time.perf_counter() - t0}
                rows.append(row)
                on_row(rows)
                log(f"{arm.label:>16} target {target:.0%} seed {seed}: MACs -{row['macs_removed']:.1%}, IoU "
                    f"{_pct(row['iou_before'])} -> {_pct(row['iou'])} ({row['seconds']:.0f} s)")
    return {"config": config_dict(config), "baseline": baseline, "rows": rows}


BASELINE_ARM = "random"


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd over seeds per (method, target); where the grid has a `random` arm at
    the same budget, also the paired difference to it after fine-tuning: each seed's IoU minus
    random's with the same seed (the same fine-tuning data order), mean and sd over the seeds both
    ran ("vs_random", "vs_random_sd", "vs_random_seeds"; None without such a pairing)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["target"]), []).append(r)
    out = []
    for (method, target), rs in groups.items():
        entry: dict[str, Any] = {"method": method, "target": target, "seeds": len(rs)}
        for key in ("macs_removed", "params_removed", "iou_before", "iou"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            entry[key] = _mean(vals)
            entry[f"{key}_sd"] = _sd(vals)
        random = {r["seed"]: r["iou"] for r in groups.get((BASELINE_ARM, target), []) if r.get("iou") is not None}
        diffs = [r["iou"] - random[r["seed"]] for r in rs
                 if method != BASELINE_ARM and r.get("iou") is not None and r["seed"] in random]
        entry["vs_random"], entry["vs_random_sd"] = _mean(diffs), _sd(diffs)
        entry["vs_random_seeds"] = len(diffs)
        out.append(entry)
    return out


def _mean(v: Sequence[float]) -> float | None:
    return sum(v) / len(v) if v else None


def _sd(v: Sequence[float]) -> float | None:
    if len(v) < 2:
        return 0.0 if v else None
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


__all__ = ["Arm", "BASELINE_ARM", "GridConfig", "aggregate", "check_targets", "config_dict", "run_grid"]
