"""Wall time of `fastprune.plan` for every registered criterion and the demo's rules, on a saved
statistics file (default: the demo's, `fastprune demo --out DIR` writes DIR/stats.fps).

    OPENBLAS_NUM_THREADS=1 python benchmarks/plan_speed.py DIR/stats.fps  (torch: 1 thread)
"""
import sys
import time
from pathlib import Path

import torch

import fastprune
from fastprune.cli.artifacts import load_model, load_stats
from fastprune.planning import Budget, Variance, plan


def main(path: str) -> None:
    torch.set_num_threads(1)
    stats = load_stats(path)
    rec = stats.meta["model"]
    weights = rec.get("weights")
    if weights:  # recorded relative to the statistics file's folder (an absolute path stays as it is)
        weights = str(Path(path).resolve().parent / weights)
    model = load_model(rec["spec"], weights).model.eval()
    rules = {"variance 0.99": Variance(0.99), "target_macs 0.75": Budget(macs=0.75)}
    for name in fastprune.criteria.names():
        crit = fastprune.criteria.get(name)
        try:
            crit.check(stats)
        except ValueError:
            continue
        for label, rule in rules.items():
            t = time.perf_counter()
            p = plan(model, stats, crit, rule)
            dt = time.perf_counter() - t
            print(f"{name:8s} {label:17s} {dt:6.2f} s  MACs removed {p.meta['macs_removed']:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
