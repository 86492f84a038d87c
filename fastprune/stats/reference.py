"""Float64 PyTorch reference of every ChannelMoments statistic: the test oracle.

Deliberately naive and independent of the kernels: the whole input is upcast to float64 and
each statistic comes from torch's own reductions (two-pass mean/var, torch.cov, torch.corrcoef).
Samples whose channels are not all finite are dropped, as `update(..., allow_nonfinite=True)` does.
"""
from __future__ import annotations

import torch

STATISTICS = ("count", "mean", "var", "std", "abs_mean", "zero_fraction", "min", "max", "cov", "corr")


def samples_by_channel(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, C) -> float64 (C, M) with one column per sample (pixel)."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.dim() == 4:
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    if x.dim() == 2:
        return x.t()
    raise ValueError(f"reference moments expect (N, C, H, W) or (N, C), got {tuple(x.shape)}")


def finite_samples(x: torch.Tensor) -> torch.Tensor:
    """Float64 (C, M') of the samples whose every channel is finite."""
    X = samples_by_channel(x)
    return X[:, torch.isfinite(X).all(0)]


def reference_moments(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every statistic of one batch in float64 (msd included for 4-D input)."""
    X = finite_samples(x)
    C, M = X.shape
    out = {
        "count": torch.full((C,), float(M), dtype=torch.float64),
        "mean": X.mean(1),
        "var": X.var(1),
        "std": X.std(1),
        "abs_mean": X.abs().mean(1),
        "zero_fraction": (X == 0).double().mean(1),
        "min": X.min(1).values,
        "max": X.max(1).values,
        "cov": torch.cov(X),
        "corr": torch.corrcoef(X),
        "nonfinite": (~torch.isfinite(samples_by_channel(x))).sum(1),
    }
    if C == 1:
        out["cov"] = out["cov"].reshape(1, 1)
        out["corr"] = out["corr"].reshape(1, 1)
    if x.dim() == 4:
        out["msd"] = reference_msd(x)
    return out


def reference_msd(x: torch.Tensor) -> torch.Tensor:
    """Mean over images of each channel's spatial std (n-1) over the image's finite pixels."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    stds = []
    for img in x:  # (C, H, W)
        P = img.reshape(img.shape[0], -1)
        P = P[:, torch.isfinite(P).all(0)]
        if P.shape[1] > 0:
            stds.append(P.std(1))
    return torch.stack(stds).mean(0)
