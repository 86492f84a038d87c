"""What a criterion sees of one channel group: its statistics (`GroupInfo` with the graph's
`Member`s) and the model's weights, with a cache so that scores, covariances and spectra are
computed once per group however often a planner asks."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from fastprune.graph import Member
from fastprune.stats.statistics import GroupInfo, Statistics

from .linalg import correlation


class GroupContext:
    def __init__(self, model: torch.nn.Module, stats: Statistics, gid: str,
                 modules: dict[str, torch.nn.Module] | None = None) -> None:
        self.model, self.stats, self.gid = model, stats, str(gid)
        self.group: GroupInfo = stats.group(self.gid)
        self._modules = modules if modules is not None else dict(model.named_modules())
        self._cache: dict[Any, Any] = {}

    @property
    def channels(self) -> int:
        return self.group.channels

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def scores(self, criterion: Any) -> np.ndarray:
        """The criterion's checked scores for this group, computed once."""
        return self.cached(("scores", repr(criterion)), lambda: checked_scores(criterion, self))

    def module(self, name: str) -> torch.nn.Module:
        if name not in self._modules:
            raise ValueError(f"fastprune: the model has no module '{name}' that the statistics name")
        return self._modules[name]

    def moments(self):
        m = self.stats.moments.get(self.gid)
        if m is None:
            raise ValueError(f"fastprune: no activation statistics for group {self.gid}")
        return m

    def covariance(self) -> np.ndarray:
        def make() -> np.ndarray:
            m = self.moments()
            cov = getattr(m, "cov", None) if self.stats.meta.get("covariance", True) else None
            if cov is None:
                raise ValueError(f"fastprune: group {self.gid} has no covariance; collect with covariance=True")
            return as_numpy(cov)
        return self.cached("covariance", make)

    def correlation(self) -> np.ndarray:
        return self.cached("correlation", lambda: correlation(self.covariance()))

    def filters(self) -> torch.Tensor:
        """(C, F) float64: each channel's producer filters (all coupled producers, concatenated)."""
        parts = []
        for p in self.group.producers:
            mod = self.module(p.module)
            w = getattr(mod, "weight", None)
            if w is None:
                continue
            dim = 1 if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd) else 0
            if dim == 1 and mod.groups != 1:
                raise NotImplementedError("fastprune: grouped transposed-convolution producers are not scored by weight")
            rows = torch.tensor([i for c in range(self.channels) for i in p.positions(c)], device=w.device)
            sel = w.detach().index_select(dim, rows).movedim(dim, 0)
            parts.append(sel.reshape(self.channels, -1).to(torch.float64).cpu())
        if not parts:
            raise ValueError(f"fastprune: group {self.gid} has no producer with weights to score")
        return torch.cat(parts, dim=1)

    def consumer_weight(self, consumer: Member) -> tuple[torch.Tensor, int]:
        """The consumer conv's weight restricted to this group's input channels, and its groups."""
        mod = self.module(consumer.module)
        w = mod.weight.detach()
        idx = torch.tensor(consumer.indices, device=w.device)
        g = int(getattr(mod, "groups", 1))
        if g == 1:
            return w.index_select(1, idx), 1
        cin = w.shape[1] * g
        if g == cin:  # depthwise (with channel multiplier)
            mult = w.shape[0] // g
            sel = w.reshape(g, mult, *w.shape[1:]).index_select(0, idx)
            return sel.reshape(len(consumer.indices) * mult, *w.shape[1:]), len(consumer.indices)
        raise NotImplementedError(f"fastprune: grouped consumer '{consumer.module}' (groups={g}) is not supported by NCI")

    def consumer_columns(self, consumer: Member) -> torch.Tensor:
        """(C, O, block) float64: a linear / up-convolution consumer's weights read by each
        group channel (every feature of a flattened channel's block)."""
        mod = self.module(consumer.module)
        w = mod.weight.detach().to(torch.float64).cpu()
        cols = torch.tensor([i for c in range(self.channels) for i in consumer.positions(c)])
        if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd):
            sel = w.index_select(0, cols).flatten(1)            # (C*block, O*taps)
        else:
            sel = w.index_select(1, cols).T                     # (C*block, O)
        return sel.reshape(self.channels, consumer.block, -1).transpose(1, 2)


def as_numpy(x: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu().to(torch.float64).numpy())


def checked_scores(criterion: Any, ctx: GroupContext) -> np.ndarray:
    """`criterion.scores(ctx)` as float64, checked for shape and finiteness."""
    s = np.asarray(criterion.scores(ctx), dtype=np.float64)
    if s.shape != (ctx.channels,):
        raise RuntimeError(f"fastprune: criterion {criterion.name} gave {s.shape} scores for {ctx.channels} channels")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"fastprune: criterion {criterion.name} gave non-finite scores for group {ctx.gid}")
    return s
