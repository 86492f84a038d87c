"""Moments engine speed, as ratios against torch baselines timed in the same run.

pytest benchmarks/test_bench_moments.py --benchmark-only -s   (prints the tables; figures in README)

- full moments + covariance vs torch `X @ X.T` on the same data already laid out as C x M
  (target <= 0.5x), and statistics without covariance vs one `torch.sum` (target <= 1.1x), on
  (8, 64, 512, 512) fp32;
- a scaling table over C, dtype and memory layout;
- on a CUDA device: achieved GB/s against a device-to-device copy.
Ratios are printed and stored in the benchmark's extra_info; nothing is asserted.
"""
from __future__ import annotations


import sys
from pathlib import Path

import pytest
import torch

import fastprune
from fastprune import ChannelMoments, channel_moments
from fastprune.report.machine import best_time, copy_gbps

sys.path.insert(0, str(Path(__file__).parent))
from moments_bars import TARGETS, bar_data, best_times  # noqa: E402


@pytest.fixture(scope="module")
def big() -> tuple[torch.Tensor, torch.Tensor]:
    return bar_data()


ROUNDS = 7  # interleaved rounds (ours, torch): the machine's load weighs on both alike


def test_moments_with_covariance_vs_gram(benchmark, big):
    x, X = big
    best = best_times(x, X, ("cov", "gemm"), ROUNDS)
    t_ours, t_gemm = best["cov"], best["gemm"]
    benchmark.pedantic(lambda: channel_moments(x), rounds=1)
    ratio = t_ours / t_gemm
    benchmark.extra_info.update(torch_gram_s=t_gemm, ratio=ratio, target=TARGETS["cov"], isa=fastprune.cpu_isa())
    print(f"\nmoments+cov {t_ours * 1e3:.0f} ms, torch X@X.T {t_gemm * 1e3:.0f} ms: {ratio:.2f}x (target {TARGETS['cov']}x)")


def test_statistics_without_covariance_vs_sum(benchmark, big):
    x, X = big
    best = best_times(x, X, ("stats", "sum"), ROUNDS)
    t_ours, t_sum = best["stats"], best["sum"]
    benchmark.pedantic(lambda: channel_moments(x, covariance=False), rounds=1)
    ratio = t_ours / t_sum
    benchmark.extra_info.update(torch_sum_s=t_sum, ratio=ratio, target=TARGETS["stats"], isa=fastprune.cpu_isa())
    print(f"\nstatistics {t_ours * 1e3:.0f} ms, torch.sum {t_sum * 1e3:.0f} ms: {ratio:.2f}x (target {TARGETS['stats']}x)")


def test_scaling_table(benchmark):
    """C x dtype x layout, about 16M elements each; ratios to torch X@X.T / torch.sum of fp32 data."""
    rows = []

    def table() -> None:
        rows.clear()
        for C in (16, 64, 256, 512):
            side = int((16 * 2**20 / (2 * C)) ** 0.5)
            base = torch.randn(2, C, side, side).relu_()
            X = base.transpose(0, 1).reshape(C, -1)
            t_gemm, t_sum = best_time(lambda: X @ X.T, 2), best_time(lambda: base.sum(), 2)
            for dtype in (torch.float32, torch.bfloat16):
                for layout in ("nchw", "channels_last"):
                    x = base.to(dtype)
                    if layout == "channels_last":
                        x = x.to(memory_format=torch.channels_last)
                    t_cov = best_time(lambda: channel_moments(x), 2)
                    t_st = best_time(lambda: channel_moments(x, covariance=False), 2)
                    rows.append((C, str(dtype).split(".")[1], layout, t_cov * 1e3, t_cov / t_gemm,
                                 t_st * 1e3, t_st / t_sum))

    benchmark.pedantic(table, rounds=1, iterations=1)
    lines = ["| C | dtype | layout | moments+cov ms | / torch X@X.T | stats ms | / torch.sum |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c} | {d} | {l} | {a:.1f} | {b:.2f} | {e:.1f} | {f:.2f} |" for c, d, l, a, b, e, f in rows]
    benchmark.extra_info["table"] = lines
    print("\n" + "\n".join(lines))


@pytest.mark.gpu
@pytest.mark.parametrize("shape,dtype", [((8, 64, 512, 512), torch.bfloat16), ((8, 64, 512, 512), torch.float32),
                                         ((4096, 64, 7, 7), torch.bfloat16)], ids=str)
def test_cuda_bandwidth_vs_copy(benchmark, shape, dtype):
    """Input bytes read per second by moments (with and without covariance) as a fraction of a
    device-to-device copy's rate (bytes read + written per second). Target: >= 0.8 on
    (8, 64, 512, 512) bf16."""
    if not fastprune.cuda_available():
        pytest.skip("needs a CUDA device and fastprune's CUDA back-end")
    x = torch.randn(shape, device="cuda").relu_().to(dtype)
    sync = torch.cuda.synchronize
    nbytes = x.numel() * x.element_size()
    copy_gbs = copy_gbps(repeats=10, like=x)
    m = {cov: ChannelMoments(shape[1], covariance=cov) for cov in (True, False)}
    rate = {}
    for cov in (True, False):
        m[cov].update(x)  # the workspace is allocated once
        t = best_time(lambda: m[cov].update(x), 10, sync)
        rate[cov] = nbytes / t / 1e9
    benchmark.pedantic(lambda: (m[True].update(x), sync()), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(copy_gbs=copy_gbs, moments_cov_gbs=rate[True], stats_gbs=rate[False],
                                cov_fraction=rate[True] / copy_gbs, stats_fraction=rate[False] / copy_gbs)
    print(f"\nGPU {tuple(shape)} {dtype}: copy {copy_gbs:.0f} GB/s; moments+cov {rate[True]:.0f} GB/s "
          f"({rate[True] / copy_gbs:.2f} of copy); statistics {rate[False]:.0f} GB/s ({rate[False] / copy_gbs:.2f})")
