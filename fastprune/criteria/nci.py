"""Next-convolution influence criteria: nci, nci_w, pca_nci, msd_nci."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastprune.graph import Member

from .base import Criterion, Knob, register
from .context import GroupContext, as_numpy
from .linalg import basis_matrix, check_basis, count_for_variance, explained_variance_ratio


def _sum_squares(moments) -> np.ndarray:
    n = as_numpy(moments.count)
    return as_numpy(moments.var) * (n - 1) + n * as_numpy(moments.mean) ** 2


def _dense_energy(ctx: GroupContext, consumer: Member) -> np.ndarray:
    """Energy of channel c through a consumer that reads each input position once, feature by
    feature: sum over the features f of c of (sum of squares of f) * ||W[:, f]||^2 -- a linear
    layer (every feature of a flattened channel's block, from the per-feature moments) or a
    transposed conv with stride >= kernel (the U-Net 2x2/2 up-convolution, from the moments)."""
    mod = ctx.module(consumer.module)
    if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd) and (
            mod.groups != 1 or any(s < (k - 1) * d + 1 for s, k, d in zip(mod.stride, mod.kernel_size, mod.dilation))):
        raise ValueError(f"fastprune: NCI through '{consumer.module}' needs stride >= kernel "
                         "(overlapping transposed convolutions are not supported)")
    if not isinstance(mod, (torch.nn.Linear, torch.nn.modules.conv._ConvTransposeNd)):
        raise ValueError(f"fastprune: no next-layer influence for consumer '{consumer.module}' ({consumer.kind})")
    wn = ctx.consumer_columns(consumer).square().sum(1).numpy()  # (C, block): ||W[:, f]||^2
    features = ctx.stats.features.get(ctx.gid, {}).get(consumer.module)
    if features is not None:
        return np.sum(_sum_squares(features).reshape(ctx.channels, consumer.block) * wn, axis=1)
    if consumer.block > 1:
        raise ValueError(f"fastprune: group {ctx.gid} reaches '{consumer.module}' flattened but has no per-feature "
                         "statistics: collect with influence=True")
    return _sum_squares(ctx.moments()) * wn[:, 0]


def influence(ctx: GroupContext) -> np.ndarray:
    """I_c = sum over consumers of E||conv(A_c, W_next[:, c])||^2 (exact, from R_c(delta), for
    convolutions; from the moments for linear layers and non-overlapping up-convolutions)."""
    def make() -> np.ndarray:
        accs = ctx.stats.influence.get(ctx.gid, {})
        total = np.zeros(ctx.channels)
        found = False
        for c in ctx.group.consumers:
            if c.module in accs:
                w, groups = ctx.consumer_weight(c)
                total += as_numpy(accs[c.module].influence(w, groups))
                found = True
            elif c.kind in ("linear", "conv_transpose"):
                total += _dense_energy(ctx, c)
                found = True
        if not found:
            raise ValueError(f"fastprune: group {ctx.gid} has no next-layer statistics "
                             "(collect with influence=True; its consumers must be convolutions or linear layers)")
        return total
    return ctx.cached("influence", make)


def weight_influence(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """sum_{o, t} |W[o, c, t]| per input channel c of a (grouped) conv weight (C,) float64."""
    w = torch.as_tensor(weight).detach().to(torch.float64).cpu()
    cout, cg = w.shape[:2]
    return w.abs().reshape(groups, cout // groups, cg, -1).sum(dim=(1, 3)).reshape(groups * cg)


@register
class NCI(Criterion):
    """Next-convolution influence: the energy channel c contributes to every consumer's output."""
    name = "nci"
    needs = frozenset({"moments", "influence"})

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return influence(ctx)


@register
class NCIW(Criterion):
    """Weight-only variant: sum over consumers of sum |W_next[:, c]|."""
    name = "nci_w"

    def scores(self, ctx: GroupContext) -> np.ndarray:
        total = np.zeros(ctx.channels)
        found = False
        for c in ctx.group.consumers:
            mod = ctx.module(c.module)
            if c.kind in ("conv", "depthwise"):
                total += as_numpy(weight_influence(*ctx.consumer_weight(c)))
            elif isinstance(mod, torch.nn.Linear) or (
                    isinstance(mod, torch.nn.modules.conv._ConvTransposeNd) and mod.groups == 1):
                total += ctx.consumer_columns(c).abs().sum((1, 2)).numpy()
            else:
                continue
            found = True
        if not found:
            raise ValueError(f"fastprune: group {ctx.gid} has no consuming convolution for nci_w")
        return total


def pca_spectrum(ctx: GroupContext, basis: str = "correlation") -> np.ndarray:
    """Cumulative explained-variance ratio of the group's correlation (or covariance) matrix,
    computed once per basis."""
    if basis == "correlation":
        return ctx.cached("pca_cumulative", lambda: np.cumsum(explained_variance_ratio(ctx.correlation())))
    return ctx.cached(("pca_cumulative", basis),
                      lambda: np.cumsum(explained_variance_ratio(basis_matrix(ctx.covariance(), basis))))


def pca_count(ctx: GroupContext, tau: float, basis: str = "correlation") -> int:
    """Fewest principal components of the `basis` matrix (correlation: standardised channels, as
    the papers; covariance: raw feature maps, as scikit-learn's PCA) reaching explained variance tau."""
    return count_for_variance(pca_spectrum(ctx, basis), float(tau))


@dataclass(frozen=True)
class PCANCIOptions:
    variance: float = 0.95
    basis: str = "correlation"   # or "covariance": the matrix whose PCA counts the channels

    def __post_init__(self) -> None:
        check_basis(self.basis)


@register
class PCANCI(Criterion):
    """NCI decides which channels; PCA of the correlation matrix (fewest components reaching
    explained variance tau, option `variance`) decides how many."""
    name = "pca_nci"
    needs = frozenset({"moments", "covariance", "influence"})
    Options = PCANCIOptions
    knob = Knob("variance", 1e-6, 1.0, increasing=True)

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return influence(ctx)

    def count(self, ctx: GroupContext, value: float | None = None) -> int:
        return pca_count(ctx, self.knob_value(value), self.options.basis)

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        tau = float(self.options.variance)
        return {"pca_components": pca_count(ctx, tau, self.options.basis), "variance_tau": tau,
                "basis": self.options.basis}


def _normalise(x: np.ndarray) -> np.ndarray:
    m = float(np.mean(np.abs(x)))
    return x / m if m > 0 else np.zeros_like(x)


@dataclass(frozen=True)
class MSDNCIOptions:
    alpha: float | None = None       # prune below mean - alpha * std (default 1)
    percentile: float | None = None  # or below this percentile

    def __post_init__(self) -> None:
        if self.alpha is not None and self.percentile is not None:
            raise ValueError("fastprune: give msd_nci either alpha= or percentile=, not both")
        if self.percentile is not None and not 0 <= self.percentile <= 100:
            raise ValueError(f"fastprune: percentile must be in [0, 100], got {self.percentile}")


@register
class MSDNCI(Criterion):
    """Mean-normalised NCI plus mean-normalised MSD; the low tail of this score's distribution
    in the layer is pruned (below mean - alpha*std, option `alpha` default 1, or below the
    `percentile`-th percentile). The budget search moves alpha."""
    name = "msd_nci"
    needs = frozenset({"moments", "influence"})
    Options = MSDNCIOptions
    knob = Knob("alpha", -64.0, 64.0, increasing=True)

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return 0.5 * (_normalise(influence(ctx)) + _normalise(as_numpy(ctx.moments().msd)))

    def _cut(self, ctx: GroupContext, value: float | None) -> float:
        s = ctx.scores(self)
        if value is None and self.options.percentile is not None:
            return float(np.percentile(s, self.options.percentile))
        a = 1.0 if value is None and self.options.alpha is None else float(self.knob_value(value))
        return float(s.mean() - a * s.std())

    def count(self, ctx: GroupContext, value: float | None = None) -> int:
        return int(np.sum(ctx.scores(self) >= self._cut(ctx, value)))

    def knob_value(self, value: float | None = None) -> float | None:
        v = super().knob_value(value)
        return 1.0 if v is None and self.options.percentile is None else v

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        rule = ({"percentile": float(self.options.percentile)} if self.options.percentile is not None
                else {"alpha": float(self.knob_value())})
        return {"cutoff": self._cut(ctx, None), **rule}
