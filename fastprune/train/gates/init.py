"""Initial values for a group's vector of importance weights (gates).

A gate vector of n scalars is read as a 1-D weight of shape (n,), whose fans are those
Keras gives a 1-D shape: fan_in = fan_out = n. Hence

- ``ones``: all 1 (the unpruned network's function is unchanged at the start);
- ``uniform``: U(0, 1);
- ``chaotic``: the logistic map x_{k+1} = r x_k (1 - x_k), r = 3.99, started from x_0 ~ U(0.05, 0.95)
  and run `burn_in` steps; values lie in (0, 1) and are deterministic given x_0;
- ``he``, ``lecun``: truncated normals as Keras's ``he_normal`` / ``lecun_normal`` (the
  initialisers of the paper's Keras setup; ``VarianceScaling`` with ``distribution=
  "truncated_normal"``): N(0, s²) cut at ±2s, s = sqrt(scale / n) / 0.87962566103423978 (the
  standard deviation of a unit normal cut at ±2), so the variance is exactly scale / n:
  2/n for He, 1/n for LeCun;
- ``xavier``: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) = sqrt(3/n) (Keras's ``glorot_uniform``).

The three fan-scaled schemes are zero-mean, so they start far from the unpruned function
and need more gate training (as in Sawant et al., who compare them); ``ones`` is the default.
"""
from __future__ import annotations

import math

import torch

INITS = ("ones", "uniform", "chaotic", "he", "lecun", "xavier")
LOGISTIC_R = 3.99
TRUNCATED_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2] (Keras's constant)


def logistic_map(n: int, x0: float, r: float = LOGISTIC_R, burn_in: int = 16) -> torch.Tensor:
    """n successive values of the logistic map after `burn_in` steps from x0 (float64 iteration)."""
    if not 0.0 < x0 < 1.0:
        raise ValueError(f"fastprune: logistic map start x0 must lie in (0, 1), got {x0}")
    x = float(x0)
    for _ in range(burn_in):
        x = r * x * (1.0 - x)
    out = []
    for _ in range(n):
        x = r * x * (1.0 - x)
        out.append(x)
    return torch.tensor(out, dtype=torch.float32)


def init_gates(n: int, method: str = "ones", generator: torch.Generator | None = None) -> torch.Tensor:
    """A float32 vector of n initial gate values drawn by `method` (see the module docstring)."""
    if n < 1:
        raise ValueError(f"fastprune: a gate vector needs at least one channel, got n={n}")
    if method == "ones":
        return torch.ones(n)
    if method == "uniform":
        return torch.rand(n, generator=generator)
    if method == "chaotic":
        x0 = 0.05 + 0.9 * float(torch.rand((), generator=generator))
        return logistic_map(n, x0)
    if method in ("he", "lecun"):
        std = math.sqrt((2.0 if method == "he" else 1.0) / n) / TRUNCATED_STD
        return torch.nn.init.trunc_normal_(torch.empty(n), 0.0, std, -2 * std, 2 * std, generator=generator)
    if method == "xavier":
        a = math.sqrt(6.0 / (2 * n))
        return (torch.rand(n, generator=generator) * 2 - 1) * a
    raise ValueError(f"fastprune: unknown gate initialisation {method!r}; expected one of {INITS}")
