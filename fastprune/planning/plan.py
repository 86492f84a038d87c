"""A pruning plan: which output channels each producer keeps, and why. JSON, never pickle."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastprune._documents import check_tag

FORMAT = "fastprune.plan"
VERSION = 1


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
        self.keep = {k: sorted(int(i) for i in v) for k, v in self.keep.items()}
        self.channels = {k: int(v) for k, v in self.channels.items()}
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
        return json.dumps(
            {"format": FORMAT, "version": VERSION, "keep": self.keep, "channels": self.channels,
             "layers": self.layers, "meta": self.meta},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"fastprune: not a plan file (invalid JSON: {exc})") from None
        check_tag(doc, FORMAT, VERSION, "plan", "plan")
        try:
            return cls(keep=doc["keep"], channels=doc["channels"], layers=doc.get("layers", {}), meta=doc.get("meta", {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"fastprune: corrupt plan file ({exc!r})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        return cls.from_json(Path(path).read_text())
