"""A pruning plan: which output channels each producer keeps, and why. JSON, never pickle."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastprune._documents import check_seal, check_tag, read_json, seal
from fastprune._files import atomic_write

FORMAT = "fastprune.plan"
VERSION = 1
MAX_CHANNELS = 1 << 24  # output channels of one layer; a larger count is a corrupt file


@dataclass
class Plan:
    """Kept output-channel indices per producer (qualified names from `named_modules()`).

    `channels` holds each producer's original output-channel count, so a plan can be
    checked against a model before it is applied. `layers` holds the per-layer record a
    planner leaves (criterion scores, retained variance, expected params/MACs ...) and
    `meta` the method, rule and model fingerprint; both must be JSON-serialisable.
    """

    keep: dict[str, list[int]]
    channels: dict[str, int]
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.keep, dict) or not isinstance(self.channels, dict) \
                or not isinstance(self.layers, dict) or not isinstance(self.meta, dict):
            raise TypeError("fastprune: a plan's keep, channels, layers and meta are dicts")
        self.keep = {_name(k): sorted(whole_number(i, f"kept channel index of '{k}'") for i in _list(v, k))
                     for k, v in self.keep.items()}
        self.channels = {_name(k): whole_number(v, f"channel count of '{k}'") for k, v in self.channels.items()}
        for name, n in self.channels.items():
            if not 1 <= n <= MAX_CHANNELS:
                raise ValueError(f"fastprune: the plan gives '{name}' {n} output channels (1..{MAX_CHANNELS} allowed)")
        for name, idx in self.keep.items():
            if name not in self.channels:
                raise ValueError(f"fastprune: plan keeps channels of '{name}' but does not say how many it had")
            n = self.channels[name]
            if len(set(idx)) != len(idx):
                raise ValueError(f"fastprune: plan lists a kept channel of '{name}' twice")
            if idx and (idx[0] < 0 or idx[-1] >= n):
                raise ValueError(f"fastprune: plan keeps channel indices outside 0..{n - 1} of '{name}'")

    def removal(self) -> dict[str, list[int]]:
        """Output-channel indices to remove per producer (only producers that lose some)."""
        out = {}
        for name, idx in self.keep.items():
            kept = set(idx)
            gone = [i for i in range(self.channels[name]) if i not in kept]
            if gone:
                out[name] = gone
        return out

    def to_json(self) -> str:
        """The plan as JSON with its format tag, version and checksum."""
        doc = seal({"format": FORMAT, "version": VERSION, "keep": self.keep, "channels": self.channels,
                    "layers": self.layers, "meta": self.meta})
        return json.dumps(doc, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """A plan from `to_json`'s text; ValueError saying which check failed (JSON, format,
        version, checksum, content)."""
        doc = read_json(text, "plan file")
        check_tag(doc, FORMAT, VERSION, "plan", "plan")
        check_seal(doc, "plan file")
        try:
            return cls(keep=doc["keep"], channels=doc["channels"], layers=doc.get("layers", {}), meta=doc.get("meta", {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"fastprune: corrupt plan file ({str(exc)[:200]})") from None

    def save(self, path: str | Path) -> None:
        atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        return cls.from_json(Path(path).read_bytes())


def whole_number(v: Any, what: str) -> int:
    """`v` as an int if it is one (an int, or a float/numpy/torch scalar with an integral value);
    booleans, fractions and non-finite values are ValueErrors naming `what`."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__index__"):
        raise ValueError(f"fastprune: {what} must be a whole number, got {v!r}")
    if isinstance(v, float) and (not math.isfinite(v) or abs(v) > 2 ** 53 or v != int(v)):
        raise ValueError(f"fastprune: {what} must be a whole number, got {v!r}")
    return int(v)


def _name(k: Any) -> str:
    if not isinstance(k, str):
        raise ValueError(f"fastprune: a plan names layers by strings, got {k!r}")
    return k


def _list(v: Any, k: str) -> list:
    if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
        raise ValueError(f"fastprune: the plan's kept channels of '{k}' are not a list")
    return list(v)
