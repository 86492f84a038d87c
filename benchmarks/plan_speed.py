"""Wall time of `fastprune.plan` for every registered criterion (and the demo's lfa with
factors="variance") under the demo's rules, on a saved statistics file (default: the demo's,
`fastprune demo --out DIR` writes DIR/stats.fps). Each figure is the best of ROUNDS plans
(default 3): on a machine shared with other work the best round is the least disturbed one.
`--save FILE` writes every plan's kept channels as JSON; `--compare FILE` checks them against
such a file (written by other code on the same statistics: a speed-up must keep the same channels).

    OPENBLAS_NUM_THREADS=1 python benchmarks/plan_speed.py DIR/stats.fps [--rounds N] [--save F] [--compare F]
        [--model SPEC_OR_FOLDER]   (statistics from `fastprune score`, e.g. with --patch-gram for lasso)
        [--methods NAME ...]       (only these criteria)
"""
import argparse
import json
import time
from pathlib import Path

import torch

import fastprune
from fastprune.cli.artifacts import load_model, load_stats
from fastprune.planning import Budget, Variance, plan


def main(path: str, rounds: int = 3, save: str | None = None, compare: str | None = None,
         model_spec: str | None = None, only: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    stats = load_stats(path)
    if model_spec:
        model = load_model(model_spec).model.eval()
    else:  # the model the statistics record (a demo's: spec and weights)
        rec = stats.meta["model"]
        weights = rec.get("weights")
        if weights:  # recorded relative to the statistics file's folder (an absolute path stays as it is)
            weights = str(Path(path).resolve().parent / weights)
        model = load_model(rec["spec"], weights).model.eval()
    rules = {"variance 0.99": Variance(0.99), "target_macs 0.75": Budget(macs=0.75)}
    methods = [(name, fastprune.criteria.get(name)) for name in fastprune.criteria.names()]
    methods.append(("lfa (factors=variance 0.99)", fastprune.criteria.get("lfa", factors="variance", variance=0.99)))
    kept, differ = {}, []
    want = json.loads(Path(compare).read_text()) if compare else None
    for name, crit in methods:
        if only and name.split()[0] not in only:
            continue
        try:
            crit.check(stats)
        except ValueError:
            continue
        for label, rule in rules.items():
            best = float("inf")
            for _ in range(rounds):
                t = time.perf_counter()
                p = plan(model, stats, crit, rule)
                best = min(best, time.perf_counter() - t)
            key = f"{name} | {label}"
            kept[key] = p.keep
            same = "" if want is None else "  same channels" if want.get(key) == p.keep else "  CHANNELS DIFFER"
            if want is not None and want.get(key) != p.keep:
                differ.append(key)
            print(f"{name:28s} {label:17s} {best:6.2f} s  MACs removed {p.meta['macs_removed']:.3f}{same}", flush=True)
    if save:
        Path(save).write_text(json.dumps(kept, sort_keys=True))
    if differ:
        print(f"kept channels differ from {compare}: {', '.join(differ)}")
    return 1 if differ else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stats")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--save")
    ap.add_argument("--compare")
    ap.add_argument("--model", help="model SPEC or folder (default: the one the statistics record)")
    ap.add_argument("--methods", nargs="+", help="only these criteria (default: every registered one)")
    a = ap.parse_args()
    raise SystemExit(main(a.stats, a.rounds, a.save, a.compare, a.model, a.methods))
