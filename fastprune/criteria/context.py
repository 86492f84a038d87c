"""What a criterion sees of one channel group: its statistics and the model's weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fastprune.stats.statistics import GroupInfo, Statistics


@dataclass
class Scored:
    """A criterion's answer for one group: importance per channel (higher = keep), optionally
    the criterion's own selection (`keep`), and JSON-able extras for the plan's report."""
    scores: np.ndarray
    keep: list[int] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroupContext:
    model: torch.nn.Module
    stats: Statistics
    gid: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> GroupInfo:
        return self.stats.group(self.gid)

    @property
    def channels(self) -> int:
        return self.group.channels

    def module(self, name: str) -> torch.nn.Module:
        mods = dict(self.model.named_modules())
        if name not in mods:
            raise ValueError(f"fastprune: the model has no module '{name}' that the statistics name")
        return mods[name]

    def moments(self):
        m = self.stats.moments.get(self.gid)
        if m is None:
            raise ValueError(f"fastprune: no activation statistics for group {self.gid}")
        return m

    def covariance(self) -> np.ndarray:
        m = self.moments()
        try:
            cov = m.cov
        except Exception as exc:  # collected with covariance=False
            raise ValueError(f"fastprune: group {self.gid} has no covariance; collect with covariance=True ({exc})") from None
        if cov is None:
            raise ValueError(f"fastprune: group {self.gid} has no covariance; collect with covariance=True")
        return np.asarray(torch.as_tensor(cov).detach().cpu().to(torch.float64).numpy())

    def filters(self) -> torch.Tensor:
        """(C, F) float64: each channel's producer filters (all coupled producers, concatenated)."""
        parts = []
        for p in self.group.producers:
            mod = self.module(p["module"])
            w = getattr(mod, "weight", None)
            if w is None:
                continue
            dim = 1 if isinstance(mod, torch.nn.modules.conv._ConvTransposeNd) else 0
            if dim == 1 and mod.groups != 1:
                raise NotImplementedError("fastprune: grouped transposed-convolution producers are not scored by weight")
            sel = w.detach().index_select(dim, torch.tensor(p["indices"], device=w.device)).movedim(dim, 0)
            parts.append(sel.reshape(len(p["indices"]), -1).to(torch.float64).cpu())
        if not parts:
            raise ValueError(f"fastprune: group {self.gid} has no producer with weights to score")
        return torch.cat(parts, dim=1)

    def consumer_weight(self, consumer: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """The consumer conv's weight restricted to this group's input channels, and its groups."""
        mod = self.module(consumer["module"])
        w = mod.weight.detach()
        idx = torch.tensor(consumer["indices"], device=w.device)
        g = int(getattr(mod, "groups", 1))
        if g == 1:
            return w.index_select(1, idx), 1
        cin = w.shape[1] * g
        if g == cin:  # depthwise (with channel multiplier)
            mult = w.shape[0] // g
            sel = w.reshape(g, mult, *w.shape[1:]).index_select(0, idx)
            return sel.reshape(len(consumer["indices"]) * mult, *w.shape[1:]), len(consumer["indices"])
        raise NotImplementedError(f"fastprune: grouped consumer '{consumer['module']}' (groups={g}) is not supported by NCI")


def as_numpy(x: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu().to(torch.float64).numpy())
