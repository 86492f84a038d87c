"""Rule objects: how many channels each group keeps, as typed values.

- `Variance(tau)`: per layer, the fewest principal components of the channel correlation that
  explain tau of the variance; the criterion selects that many.
- `Ratio(r)`: every layer removes the fraction r of its channels.
- `Budget(macs=r | params=r, allocation=...)`: remove the fraction r of the model's MACs or
  parameters. `allocation` says how the budget is spread over layers: "own" (criteria with
  their own per-layer count: one value of the criterion's knob for all layers, searched),
  "global" (one threshold on layer-normalised scores), "uniform" (one ratio for all layers),
  "redundancy" (per-layer counts from PCA at the tau that meets the budget, the criterion
  selecting within the layer), "marginal" (greedy: one channel at a time from the layer whose
  next channel carries the least PCA variance per unit of the resource it frees).
  Default: "own" where the criterion has a count, else "global".
- `Tolerance(eps, evaluate=...)` (in `tolerance.py`): the largest uniform ratio whose masked
  model stays within eps of the unpruned one.
- `Own(value=None)`: the criterion's own count (at its knob's option value, or `value`).
`Bounds(min_channels, round_to, exclude)` bound every count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fastprune.criteria.linalg import check_basis

ALLOCATIONS = ("own", "global", "uniform", "redundancy", "marginal")


def check_fraction(name: str, r: Any) -> float:
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= float(r) < 1.0:
        raise ValueError(f"fastprune: {name} is the fraction removed and must be in [0, 1), got {r!r}")
    return float(r)


@dataclass(frozen=True)
class Variance:
    """Per-layer count: fewest principal components reaching explained variance `tau`, of the
    channel correlation matrix (`basis="correlation"`, the default: channels of very different
    scales count alike, as in the papers) or of the covariance (`"covariance"`: raw feature
    maps, what scikit-learn's `PCA(tau)` counts)."""
    tau: float
    basis: str = "correlation"

    def __post_init__(self) -> None:
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not 0 < self.tau <= 1:
            raise ValueError(f"fastprune: variance (tau) must be in (0, 1], got {self.tau!r}")
        check_basis(self.basis)

    def describe(self) -> dict[str, Any]:
        return {"variance": float(self.tau), "basis": self.basis}


@dataclass(frozen=True)
class Ratio:
    """Every layer removes the fraction `r` of its channels (Torch-Pruning: int(C*r) removed)."""
    r: float

    def __post_init__(self) -> None:
        check_fraction("ratio", self.r)

    def count(self, channels: int) -> int:
        return channels - int(channels * self.r)

    def describe(self) -> dict[str, Any]:
        return {"ratio": float(self.r)}


@dataclass(frozen=True)
class Budget:
    """Remove the fraction `macs` of the MACs or `params` of the parameters (one of the two)."""
    macs: float | None = None
    params: float | None = None
    allocation: str | None = None

    def __post_init__(self) -> None:
        if (self.macs is None) == (self.params is None):
            raise ValueError("fastprune: a Budget takes one of macs= or params=")
        check_fraction("target_macs" if self.macs is not None else "target_params", self.target)
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise ValueError(f"fastprune: unknown allocation {self.allocation!r}; choose one of {', '.join(ALLOCATIONS)}")

    @property
    def resource(self) -> str:
        return "macs" if self.macs is not None else "params"

    @property
    def target(self) -> float:
        return float(self.macs if self.macs is not None else self.params)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"target_{self.resource}": self.target}
        if self.allocation is not None:
            out["allocation"] = self.allocation
        return out


@dataclass(frozen=True)
class Own:
    """The criterion's own per-layer count (PCA tau, LFA factors, msd_nci cut-off), at the
    criterion's option value or at `value` of its knob."""
    value: float | None = None

    def describe(self) -> dict[str, Any]:
        return {} if self.value is None else {"own": float(self.value)}


@dataclass(frozen=True)
class Bounds:
    """Every count is at least `min_channels`, rounded up to a multiple of `round_to` (at
    most all channels); producers named in `exclude` keep every channel."""
    min_channels: int = 1
    round_to: int = 1
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("min_channels", "round_to"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"fastprune: {name} must be an int >= 1, got {v!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude or ()))

    def bound(self, k: int, channels: int) -> int:
        """Apply min_channels and round_to (kept count rounded up to a multiple, at most all)."""
        k = max(int(k), self.min_channels, 1)
        if self.round_to > 1:
            k = int(math.ceil(k / self.round_to) * self.round_to)
        return min(k, channels)
