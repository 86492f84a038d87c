"""CPU inference latency: warm-up, then the median of timed repeats, with the thread count stated.

Why the median: on a shared machine a few repeats are slowed by other processes; the median
is the figure that moves least between runs. The record says how it was measured so a
reader can judge (and reproduce) the number.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Latency:
    """One latency measurement (milliseconds per forward pass of `input_shape`)."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    warmup: int
    threads: int
    input_shape: tuple[int, ...]
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> Latency:
    """Time `model(example)` on the CPU in eval mode without autograd.

    `threads` sets torch's intra-op thread count for the measurement (restored afterwards);
    None keeps the current setting. The model's train/eval mode is restored too.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastprune: measure_latency needs an nn.Module, got {type(model).__name__}")
    return measure_latencies({"model": model}, example, warmup=warmup, repeats=repeats, threads=threads)["model"]


def measure_latencies(
    models: dict[str, nn.Module],
    example: torch.Tensor,
    *,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> dict[str, Latency]:
    """Time several models on the same input, interleaved: each round runs every model once.

    On a shared machine the load changes from second to second; interleaving exposes every
    model to the same load, so the ratios between them hold even when the absolute times drift.
    """
    if not models:
        raise ValueError("fastprune: measure_latencies needs at least one model")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"fastprune: measure_latency needs a tensor input, got {type(example).__name__}")
    if example.device.type != "cpu":
        raise ValueError(f"fastprune: measure_latency times the CPU; the input is on {example.device}")
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"fastprune: '{name}' is not an nn.Module")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"fastprune: need warmup >= 0 and repeats >= 1 (got {warmup}, {repeats})")
    if threads is not None and threads < 1:
        raise ValueError(f"fastprune: threads must be >= 1 (got {threads})")
    old_threads = torch.get_num_threads()
    modes = {name: m.training for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                for m in models.values():
                    m(example)
            for _ in range(repeats):
                for name, m in models.items():
                    t0 = time.perf_counter()
                    m(example)
                    times[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old_threads)
        for name, m in models.items():
            m.train(modes[name])
    shape = tuple(int(s) for s in example.shape)
    return {name: Latency(float(statistics.median(t)), float(min(t)), float(max(t)), repeats, warmup, used, shape)
            for name, t in times.items()}
