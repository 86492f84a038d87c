"""Issue 16's two CPU bars of the moments engine in one place: the data, (8, 64, 512, 512) fp32
post-ReLU NCHW, and the four timed calls (ours with covariance against torch `X @ X.T` on the same
data laid out as C x M, statistics only against one `torch.sum`). Used by test_bench_moments.py
and ab_builds.py."""
from __future__ import annotations

import torch

from fastprune import channel_moments
from fastprune.report.machine import interleaved_best

TARGETS = {"cov": 0.5, "stats": 1.1}  # ours / torch's baseline: "cov" over "gemm", "stats" over "sum"


def bar_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 64, 512, 512).relu_()
    return x, x.transpose(0, 1).reshape(64, -1)  # the same data as a C x M matrix (a copy)


def best_times(x: torch.Tensor, X: torch.Tensor, names: tuple[str, ...], rounds: int) -> dict[str, float]:
    """Best seconds of the named calls over `rounds` interleaved rounds (load hits them alike)."""
    calls = {"cov": lambda: channel_moments(x), "gemm": lambda: X @ X.T,
             "stats": lambda: channel_moments(x, covariance=False), "sum": lambda: x.sum()}
    return interleaved_best({n: calls[n] for n in names}, rounds)
