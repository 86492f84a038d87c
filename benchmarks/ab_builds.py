"""Issue 16's moments bars for two or more builds, alternated process by process, so that a shared
machine's load weighs on every build alike: each process times interleaved best-of rounds of
moments + covariance vs torch `X @ X.T` and statistics only vs `torch.sum` on (8, 64, 512, 512)
fp32 post-ReLU NCHW (the calls of test_bench_moments.py).

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

_PROCESS = r'''
import sys, torch
from fastprune import channel_moments
from fastprune.report.machine import interleaved_best
torch.set_num_threads(int(sys.argv[1]))
x = torch.randn(8, 64, 512, 512).relu_()
X = x.transpose(0, 1).reshape(64, -1)
b = interleaved_best({"cov": lambda: channel_moments(x), "gemm": lambda: X @ X.T,
                      "stats": lambda: channel_moments(x, covariance=False), "sum": lambda: x.sum()}, int(sys.argv[2]))
print(b["cov"] / b["gemm"], b["stats"] / b["sum"])
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=4, help="processes per build")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds in a process")
    args = ap.parse_args()
    found: dict[Path, list[tuple[float, float]]] = {d: [] for d in args.checkouts}
    for _ in range(args.runs):
        for d in args.checkouts:
            out = subprocess.run([sys.executable, "-c", _PROCESS, str(args.threads), str(args.rounds)],
                                 cwd=d, env={**os.environ, "PYTHONPATH": str(d.resolve())},
                                 capture_output=True, text=True, check=True)
            cov, st = (float(v) for v in out.stdout.split())
            found[d].append((cov, st))
            print(f"{d}: moments+cov / X@X.T {cov:.3f}, statistics / sum {st:.3f}", flush=True)
    for d, rows in found.items():
        print(f"{d}: median moments+cov / X@X.T {statistics.median(r[0] for r in rows):.3f} (target 0.5), "
              f"statistics / sum {statistics.median(r[1] for r in rows):.3f} (target 1.1), {len(rows)} runs, "
              f"{args.threads} threads")


if __name__ == "__main__":
    main()
