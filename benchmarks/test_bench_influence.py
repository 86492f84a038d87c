"""Influence kernels vs torch on the issue's case: input (8, 64, 256, 256) fp32 on the CPU,
consumer 3x3 conv 64->64 (padding 1). Each test times its baseline in the same run and records
the ratio (ours / baseline) and both peak memories (growth of VmHWM in a fresh process)
in extra_info; the figures go to benchmarks/README.md ("Influence")."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from fastprune.report.machine import best_time
from fastprune.stats.influence import InfluenceMoments, PatchGram

N, C, H, W, K = 8, 64, 256, 256, 3


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    return torch.randn(C, C, K, K, generator=torch.Generator().manual_seed(1))


_PEAK = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F

    def hwm():  # peak resident set of this process image (ru_maxrss survives exec; VmHWM does not)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))

    from fastprune.stats.influence import InfluenceMoments, PatchGram
    x = torch.randn({n}, {c}, {h}, {w})
    wt = torch.randn({c}, {c}, {k}, {k})
    before = hwm()
    kind = sys.argv[1]
    if kind == "gram":
        PatchGram({c}, {k}, padding=1).update(x)
    elif kind == "unfold":
        u = F.unfold(x, {k}, padding=1)
        torch.bmm(u, u.transpose(1, 2)).sum(0)
    elif kind == "nci":
        InfluenceMoments({c}, {k}, padding=1).update(x)
    else:
        F.conv2d(x, wt, padding=1)
    print(hwm() - before)
""").format(n=N, c=C, h=H, w=W, k=K)


def peak_mib(kind: str) -> float:
    """Growth of the peak resident set (MiB) of one fresh process running `kind` once, beyond
    the input it holds (VmHWM, exact, unlike sampling)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _PEAK, kind], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1]) / 1024




def test_bench_nci_auto_moments_vs_conv2d(benchmark, x, weight):
    conv = lambda: F.conv2d(x, weight, padding=1)  # noqa: E731
    conv()
    t_conv = best_time(conv, 3)
    acc = InfluenceMoments(C, K, padding=1)
    acc.update(x)  # warm the plan cache and the thread pool
    benchmark.pedantic(lambda: acc.update(x), rounds=5, iterations=1)
    t_ours = benchmark.stats.stats.min
    mem, mem_conv = peak_mib("nci"), peak_mib("conv")
    benchmark.extra_info.update(conv2d_s=t_conv, ours_s=t_ours, ratio=t_ours / t_conv,
                                target=0.1, ours_peak_mib=mem, conv_peak_mib=mem_conv)
    print(f"\nnci auto-moments {t_ours * 1e3:.1f} ms ({mem:.0f} MiB), conv2d {t_conv * 1e3:.1f} ms "
          f"({mem_conv:.0f} MiB), ratio {t_ours / t_conv:.3f}")


def test_bench_patch_gram_vs_unfold_matmul(benchmark, x):
    def baseline() -> torch.Tensor:
        u = F.unfold(x, K, padding=1)  # (N, C*K*K, H*W): N*C*K^2*H*W values
        return torch.bmm(u, u.transpose(1, 2)).sum(0)

    t_base = best_time(baseline, 2)

    def ours() -> None:
        PatchGram(C, K, padding=1).update(x)

    ours()
    benchmark.pedantic(ours, rounds=3, iterations=1)
    t_ours = benchmark.stats.stats.min
    mem, mem_base = peak_mib("gram"), peak_mib("unfold")
    benchmark.extra_info.update(unfold_matmul_s=t_base, ours_s=t_ours, ratio=t_ours / t_base, target=0.5,
                                ours_peak_mib=mem, unfold_peak_mib=mem_base,
                                gram_mib=(C * K * K) ** 2 * 8 / 2**20)
    print(f"\npatch Gram {t_ours * 1e3:.0f} ms ({mem:.0f} MiB), unfold+matmul {t_base * 1e3:.0f} ms "
          f"({mem_base:.0f} MiB), ratio {t_ours / t_base:.3f}")


def test_bench_nci_small_maps_vs_conv2d(benchmark):
    """Per-batch cost on small maps (8, 64, 32, 32), where fixed overheads (plan, threads,
    Python) dominate: what a forward hook pays per consumer per batch. No target; recorded."""
    xs = torch.randn(8, C, 32, 32, generator=torch.Generator().manual_seed(2))
    ws = torch.randn(C, C, K, K, generator=torch.Generator().manual_seed(3))
    conv = lambda: F.conv2d(xs, ws, padding=1)  # noqa: E731
    conv()
    t_conv = best_time(conv, 20)
    acc = InfluenceMoments(C, K, padding=1)
    acc.update(xs)
    benchmark.pedantic(lambda: acc.update(xs), rounds=20, iterations=1)
    t_ours = benchmark.stats.stats.min
    benchmark.extra_info.update(conv2d_s=t_conv, ours_s=t_ours, ratio=t_ours / t_conv)
    print(f"\nnci small maps {t_ours * 1e3:.2f} ms, conv2d {t_conv * 1e3:.2f} ms, ratio {t_ours / t_conv:.3f}")
