"""collect() with covariance + next-conv influence on a U-Net (base width 32) over 512x512
batches, as a ratio to a plain forward pass over the same batches timed in the same run;
peak memory over 20 batches vs 1 batch; the naive way (hooks keeping activations, torch.cov,
scikit-learn PCA) for comparison. Figures: benchmarks/README.md ("Scoring a model")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from collect_probe import data, unet  # noqa: E402

from fastprune.report.machine import interleaved_best  # noqa: E402

for _dep in ("fastprune.stats.moments", "fastprune.stats.influence", "fastprune.graph"):
    pytest.importorskip(_dep)

SIZE = int(os.environ.get("FASTPRUNE_BENCH_SIZE", "512"))
BATCHES = int(os.environ.get("FASTPRUNE_BENCH_BATCHES", "6"))
ROUNDS = int(os.environ.get("FASTPRUNE_BENCH_ROUNDS", "4"))
ROOT = Path(__file__).resolve().parents[1]


def _probe(mode: str, batches: int) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "collect_probe.py"), mode, str(batches), str(SIZE)],
                         cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_collect_vs_forward(benchmark):
    import fastprune
    model = unet()
    xs = data(BATCHES, SIZE)

    def plain():
        with torch.no_grad():
            for x in xs:
                model(x)

    def scored():  # the dependency-graph trace included (collect traces a window of the first image)
        fastprune.collect(model, xs, progress=False)

    # interleaved rounds, so that load on the shared machine hits both alike
    best = interleaved_best({"plain": plain, "collect": scored}, ROUNDS)
    ratio = best["collect"] / best["plain"]
    benchmark.extra_info.update({"plain_s": best["plain"], "collect_s": best["collect"],
                                 "ratio": ratio, "batches": BATCHES, "size": SIZE})
    print(f"\ncollect / plain forward over {BATCHES} x {SIZE}^2: {ratio:.3f}")
    benchmark.pedantic(scored, rounds=1, iterations=1)


@pytest.mark.slow
def test_bench_collect_memory_does_not_grow(benchmark):
    # peak RSS of a fresh process moves by +-40 MiB from run to run (allocator arenas, thread
    # timing) with 1 batch as with 20: the median of three processes each
    runs = int(os.environ.get("FASTPRUNE_BENCH_MEMORY_RUNS", "3"))

    def median_probe(mode: str, batches: int) -> dict:
        found = sorted((_probe(mode, batches) for _ in range(runs)), key=lambda r: r["peak_rss_mib"])
        return found[len(found) // 2]

    one = median_probe("collect", 1)
    many = median_probe("collect", 20)
    plain = median_probe("plain", 1)
    growth = many["peak_rss_mib"] / one["peak_rss_mib"]
    benchmark.extra_info.update({"peak_1_mib": one["peak_rss_mib"], "peak_20_mib": many["peak_rss_mib"],
                                 "plain_peak_1_mib": plain["peak_rss_mib"], "growth": growth})
    print(f"\npeak RSS: plain 1 batch {plain['peak_rss_mib']:.0f} MiB, collect 1 batch {one['peak_rss_mib']:.0f} MiB, "
          f"20 batches {many['peak_rss_mib']:.0f} MiB (x{growth:.3f})")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


@pytest.mark.slow
def test_bench_naive_way(benchmark):
    n = int(os.environ.get("FASTPRUNE_BENCH_NAIVE_BATCHES", "2"))
    naive = _probe("naive", n)
    ours = _probe("collect", n)
    benchmark.extra_info.update({"naive_s": naive["seconds"], "naive_peak_mib": naive["peak_rss_mib"],
                                 "collect_s": ours["seconds"], "collect_peak_mib": ours["peak_rss_mib"], "batches": n})
    print(f"\nnaive (hooks+torch.cov+sklearn PCA) over {n} batches: {naive['seconds']:.1f}s, "
          f"{naive['peak_rss_mib']:.0f} MiB; collect: {ours['seconds']:.1f}s, {ours['peak_rss_mib']:.0f} MiB")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
