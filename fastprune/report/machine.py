"""This machine's limits, measured in the same run as the benchmarks they judge:
sgemm rate (torch.matmul, fp32) and memory bandwidth (a large tensor copy)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def best_time(fn: Callable[[], object], repeats: int = 3, sync: Callable[[], None] = lambda: None) -> float:
    """Best wall time in seconds of `repeats` runs after one warm-up; `sync` waits for a device."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int = 5) -> dict[str, float]:
    """Best wall time in seconds of each function over `rounds` rounds that run every function
    once in turn (after one warm-up each): a shared machine's load then weighs on all alike, so
    the ratios of the bests hold better than those of bests taken one function after another."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of torch.matmul on n x n matrices (2·n³ FLOPs), best of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2.0 * n ** 3 / best_time(lambda: torch.matmul(a, b), repeats) / 1e9


def copy_gbps(mbytes: int = 256, repeats: int = 5, like: torch.Tensor | None = None) -> float:
    """GB/s of a large tensor copy, counting bytes read plus bytes written: an fp32 tensor of
    `mbytes` MiB on the CPU, or a copy of `like` on its device (synchronised when on a GPU)."""
    src = like if like is not None else torch.randn(mbytes * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if src.is_cuda else (lambda: None)
    return 2.0 * src.numel() * src.element_size() / best_time(lambda: dst.copy_(src), repeats, sync) / 1e9


def limits(quick: bool = False) -> dict[str, float]:
    """{'sgemm_gflops', 'copy_gbps', 'threads'} measured now."""
    return {"sgemm_gflops": sgemm_gflops(1024 if quick else 2048, 3 if quick else 5),
            "copy_gbps": copy_gbps(64 if quick else 256, 3 if quick else 5),
            "threads": torch.get_num_threads()}
