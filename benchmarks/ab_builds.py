"""Issue 16's moments bars for two or more builds, alternated process by process, so that a shared
machine's load weighs on every build alike: each process times interleaved best-of rounds of the
four calls of moments_bars.py (this folder's, whichever checkout it runs on).

python benchmarks/ab_builds.py --threads 2 --runs 6 CHECKOUT_A CHECKOUT_B
(each CHECKOUT a source tree with its `_C` built in place). Prints every run's ratios and their
median per build."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PROCESS = r'''
import sys, torch
sys.path.insert(0, sys.argv[3])
from moments_bars import TARGETS, bar_data, best_times
torch.set_num_threads(int(sys.argv[1]))
x, X = bar_data()
b = best_times(x, X, ("cov", "gemm", "stats", "sum"), int(sys.argv[2]))
print(b["cov"] / b["gemm"], b["stats"] / b["sum"], TARGETS["cov"], TARGETS["stats"])
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=4, help="processes per build")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds in a process")
    args = ap.parse_args()
    found: dict[Path, list[tuple[float, float]]] = {d: [] for d in args.checkouts}
    targets = (0.0, 0.0)
    for _ in range(args.runs):
        for d in args.checkouts:
            out = subprocess.run([sys.executable, "-c", _PROCESS, str(args.threads), str(args.rounds), str(HERE)],
                                 cwd=d, env={**os.environ, "PYTHONPATH": str(d.resolve())},
                                 capture_output=True, text=True, check=True)
            cov, st, *targets = (float(v) for v in out.stdout.split())
            found[d].append((cov, st))
            print(f"{d}: moments+cov / X@X.T {cov:.3f}, statistics / sum {st:.3f}", flush=True)
    for d, rows in found.items():
        print(f"{d}: median moments+cov / X@X.T {statistics.median(r[0] for r in rows):.3f} (target {targets[0]}), "
              f"statistics / sum {statistics.median(r[1] for r in rows):.3f} (target {targets[1]}), {len(rows)} runs, "
              f"{args.threads} threads")


if __name__ == "__main__":
    main()
