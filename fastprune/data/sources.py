"""Scene sources: the synthetic generator (real-format loaders live in their own modules)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .synthetic import BINARY_CLASSES, MULTICLASS_CLASSES, generate_scene
from .tiles import Window


class SyntheticSource:
    """``n`` synthetic scenes of ``size`` x ``size`` pixels, deterministic by ``seed``.

    Scenes are generated on demand and the last ``cache`` of them kept (a few ms each at 128 px).
    """

    def __init__(self, n: int = 64, size: int = 128, seed: int = 0, multiclass: bool = False,
                 density: float = 1.0, cache: int = 256) -> None:
        if n < 1 or size < 8:
            raise ValueError(f"synthetic: need n >= 1 and size >= 8, got n={n}, size={size}")
        if density < 0:
            raise ValueError(f"synthetic: density must be >= 0, got {density}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.multiclass, self.density = bool(multiclass), float(density)
        self.classes = MULTICLASS_CLASSES if multiclass else BINARY_CLASSES
        self.num_classes = len(self.classes)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = max(0, int(cache))

    def __len__(self) -> int:
        return self.n

    def shape(self, i: int) -> tuple[int, int]:
        return self.size, self.size

    def name(self, i: int) -> str:
        return f"synthetic-{self.seed}-{i}"

    def _scene(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic scene {i} out of range [0, {self.n})")
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        scene = generate_scene(self.seed, i, self.size, self.multiclass, self.density)
        if self._cache_size:
            self._cache[i] = scene
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return scene

    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self._scene(i)
        if window is None:
            return image, mask
        y, x, h, w = window
        return image[:, y:y + h, x:x + w], mask[y:y + h, x:x + w]
