"""The criterion type and its registry.

A criterion (the shape of Torch-Pruning's `Importance`) scores the channels of one group
(`scores(ctx)`, higher = keep), picks k of them (`select(ctx, k)`, default: the top k by
score) and, if it brings its own per-layer count (PCA's tau, LFA's factor count, msd_nci's
cut-off), says how many (`count(ctx, value)`) as a function of one declared `Knob` that a
budget search can bisect. Each declares the statistics it `needs` and its options as a typed
dataclass with defaults. `register(cls)` adds one under `cls.name`; `get(name, **options)`,
`names()`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .context import GroupContext, checked_scores

#: the statistics a criterion may need, and what to collect for each
STATISTICS = {
    "weights": "the model's weights",
    "moments": "collect the statistics (fastprune.collect)",
    "covariance": "collect with covariance=True",
    "influence": "collect with influence=True",
    "patch_gram": "collect with patch_gram=True (`fastprune score --patch-gram`)",
    "taylor": "collect with loss=callable(output, batch) (first-order Taylor gradients)",
}


@dataclass(frozen=True)
class NoOptions:
    """A criterion without options."""


@dataclass(frozen=True)
class Knob:
    """The one option that sets an own-count criterion's per-layer count: its name, the range
    a budget search may bisect, and whether the count grows (`increasing`) with the value."""

    name: str
    low: float
    high: float
    increasing: bool = True


def available(stats: Any) -> set[str]:
    """Which of `STATISTICS` a `Statistics` holds."""
    have = {"weights"}
    if stats.moments:
        have.add("moments")
        if stats.meta.get("covariance", True):
            have.add("covariance")
    if stats.meta.get("influence", bool(stats.influence)):
        have.add("influence")
    if stats.meta.get("patch_gram", bool(stats.patch_gram)):
        have.add("patch_gram")
    if stats.taylor:
        have.add("taylor")
    return have


class Criterion:
    """Base class: override `scores`; own-count criteria set `knob` and override `count`."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"weights"})
    Options: ClassVar[type] = NoOptions
    knob: ClassVar[Knob | None] = None

    def __init__(self, **options: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ValueError(f"fastprune: criterion {self.name!r} has no option {', '.join(unknown)}"
                             f" (options: {', '.join(sorted(fields)) or 'none'})")
        self.options = self.Options(**options)

    # -- what a criterion does ------------------------------------------------------------
    def scores(self, ctx: GroupContext) -> np.ndarray:
        raise NotImplementedError

    def select(self, ctx: GroupContext, k: int) -> list[int]:
        """The k channels kept: the top k by score (ties: lower index first), sorted."""
        return top_k(ctx.scores(self), k)

    def count(self, ctx: GroupContext, value: float | None = None) -> int:
        """Own per-layer count at knob `value` (None: the option's value or default)."""
        raise ValueError(f"fastprune: criterion {self.name!r} brings no per-layer count: give a rule "
                         "(variance=, ratio=, target_macs=, target_params= or tolerance=)")

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        """JSON-able extras for the plan's per-layer record."""
        return {}

    # -- helpers --------------------------------------------------------------------------
    @property
    def own_count(self) -> bool:
        return self.knob is not None

    def knob_value(self, value: float | None = None) -> float | None:
        return value if value is not None else getattr(self.options, self.knob.name) if self.knob else None

    def check(self, stats: Any) -> None:
        """One clear error if `stats` lack what this criterion needs."""
        missing = sorted(self.needs - available(stats))
        if missing:
            raise ValueError(f"fastprune: criterion {self.name!r} needs statistics that were not collected: "
                             + "; ".join(f"{m} ({STATISTICS[m]})" for m in missing))

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.options).items() if v is not None}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({opts})"


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores (ties: lower index first), sorted."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return sorted(int(i) for i in order[:k])


_REGISTRY: dict[str, type[Criterion]] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    """Register a `Criterion` subclass under `cls.name` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Criterion)):
        raise TypeError(f"fastprune: register takes a Criterion subclass, got {cls!r}")
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"fastprune: criterion class {cls.__name__} needs a name (an identifier), got {cls.name!r}")
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"fastprune: {cls.__name__}.Options must be a dataclass")
    unknown = cls.needs - set(STATISTICS)
    if unknown:
        raise ValueError(f"fastprune: {cls.__name__} needs unknown statistics {sorted(unknown)} "
                         f"(known: {', '.join(STATISTICS)})")
    if cls.knob is not None and cls.knob.name not in {f.name for f in dataclasses.fields(cls.Options)}:
        raise ValueError(f"fastprune: {cls.__name__}'s knob {cls.knob.name!r} is not one of its options")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def seeded(name: str) -> bool:
    """Whether criterion `name`'s selection depends on a `seed` option."""
    cls = _REGISTRY.get(str(name))
    return cls is not None and "seed" in {f.name for f in dataclasses.fields(cls.Options)}


def get(name: str | Criterion, **options: Any) -> Criterion:
    """The registered criterion `name` with `options` (a Criterion instance passes through)."""
    if isinstance(name, Criterion):
        if options:
            raise ValueError("fastprune: options go to the criterion's constructor, not with an instance")
        return name
    cls = _REGISTRY.get(str(name))
    if cls is None:
        raise ValueError(f"fastprune: unknown criterion {name!r}; choose one of {', '.join(_REGISTRY)}")
    return cls(**options)
