"""Influence kernels vs torch on the issue's case: input (8, 64, 256, 256) fp32 on the CPU,
consumer 3x3 conv 64->64 (padding 1). Each test times its baseline in the same run and records
the ratio (ours / baseline) and both peak memories (growth of VmHWM in a fresh process)
in extra_info; the figures go to benchmarks/README.md ("Influence").

On a CUDA device (skipped without one): the influence pass's achieved GB/s on (8, 64, 512, 512)
bf16 and fp32 as a fraction of a device-to-device copy, and the exact patch Gram's FLOP rate."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import fastprune
from fastprune.report.machine import best_time, copy_gbps
from fastprune.stats.influence import InfluenceMoments, PatchGram, _JobSums
from fastprune.stats.influence_geometry import shift_plan

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


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_cuda_influence_bandwidth_vs_copy(benchmark, dtype):
    """Input bytes read per second by the influence pass (3x3 consumer, padding 1) as a fraction of
    a device-to-device copy's rate (bytes read + written per second): the kernels alone (tile
    pass + second pass), and InfluenceMoments.update (which also counts non-finite values with
    torch: a second read of the input and a synchronisation). Also the exact patch Gram's rate."""
    if not fastprune.cuda_available():
        pytest.skip("needs a CUDA device and fastprune's CUDA back-end")
    shape = (8, 64, 512, 512)
    x = torch.randn(shape, device="cuda").relu_().to(dtype)
    sync = torch.cuda.synchronize
    nbytes = x.numel() * x.element_size()
    copy_gbs = copy_gbps(repeats=10, like=x)
    sums = _JobSums(shift_plan(InfluenceMoments(64, 3, padding=1).geometry, 512, 512), 64, x.device)
    t_pass = best_time(lambda: sums.add(x), 10, sync)
    acc = InfluenceMoments(64, 3, padding=1)
    t_update = best_time(lambda: acc.update(x), 10, sync)
    gram = PatchGram(64, 3, padding=1)
    t_gram = best_time(lambda: gram.update(x), 3, sync)
    d = 64 * 9
    gram_tflops = 2 * (d * (d + 1) / 2) * shape[0] * shape[2] * shape[3] / t_gram / 1e12  # upper triangle
    benchmark.pedantic(lambda: (sums.add(x), sync()), rounds=3, warmup_rounds=1)
    pass_gbs, update_gbs = nbytes / t_pass / 1e9, nbytes / t_update / 1e9
    benchmark.extra_info.update(copy_gbs=copy_gbs, pass_gbs=pass_gbs, update_gbs=update_gbs,
                                pass_fraction=pass_gbs / copy_gbs, update_fraction=update_gbs / copy_gbs,
                                patch_gram_s=t_gram, patch_gram_tflops=gram_tflops)
    print(f"\nGPU influence {shape} {dtype}: copy {copy_gbs:.0f} GB/s; kernels {pass_gbs:.0f} GB/s "
          f"({pass_gbs / copy_gbs:.2f} of copy, {t_pass * 1e6:.0f} us); update {update_gbs:.0f} GB/s "
          f"({update_gbs / copy_gbs:.2f}); exact patch Gram {t_gram * 1e3:.1f} ms ({gram_tflops:.1f} TFLOP/s)")
