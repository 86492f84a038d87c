"""Torch datasets over a scene source: whole scenes, random training crops, sliding windows.

A *scene source* is anything with ``__len__``, ``shape(i) -> (H, W)``, ``name(i) -> str`` and
``read(i, window=None) -> (image float32 (3, h, w), mask int64 (h, w))`` where ``window`` is
``(y, x, h, w)``; sources read only the window they are asked for (large TIFFs stay on disk).
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

Window = tuple[int, int, int, int]


class SceneSource(Protocol):
    num_classes: int
    classes: tuple[str, ...]

    def __len__(self) -> int: ...
    def shape(self, i: int) -> tuple[int, int]: ...
    def name(self, i: int) -> str: ...
    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class FilePairs:
    """The `SceneSource` accessors shared by the folder loaders: `images[i]` (a Path) and the
    pre-read `_shapes[i]` (height, width) of each image/label pair."""

    images: list
    _shapes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.images)

    def shape(self, i: int) -> tuple[int, int]:
        return self._shapes[i]

    def name(self, i: int) -> str:
        return self.images[i].stem


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` every ``stride`` covering [0, length); the last
    window is moved back to end exactly at ``length`` (no padding, every pixel covered)."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _pair(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)))


class _Base(Dataset):
    def __init__(self, source: SceneSource) -> None:
        if len(source) == 0:
            raise ValueError("dataset has no scenes")
        self.source = source
        self.num_classes = source.num_classes
        self.classes = source.classes
        self.ignore_index = getattr(source, "ignore_index", None)


class Scenes(_Base):
    """Whole scenes, one item each."""

    def sizes(self) -> set[tuple[int, int]]:
        """The (height, width) of the items (several: they cannot be batched together)."""
        return {tuple(self.source.shape(i)) for i in range(len(self.source))}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _pair(*self.source.read(i))


class RandomCrops(_Base):
    """``samples`` random ``tile`` x ``tile`` crops per epoch (default: as many as the number of
    non-overlapping tiles in the scenes). Crop k of epoch e is a pure function of
    (seed, e, k); ``set_epoch`` (called by ``fastprune.train.fit``) draws new crops."""

    def __init__(self, source: SceneSource, tile: int, samples: int | None = None, seed: int = 0) -> None:
        super().__init__(source)
        if tile < 1:
            raise ValueError(f"tile must be >= 1, got {tile}")
        for i in range(len(source)):
            h, w = source.shape(i)
            if h < tile or w < tile:
                raise ValueError(f"scene {source.name(i)} is {h}x{w}, smaller than tile {tile}")
        self.tile, self.seed, self.epoch = tile, seed, 0
        if samples is None:
            samples = sum(max(1, (h // tile) * (w // tile))
                          for h, w in (source.shape(i) for i in range(len(source))))
        self.samples = int(samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < self.samples:
            raise IndexError(k)
        rng = np.random.default_rng([self.seed, self.epoch, k])
        i = int(rng.integers(len(self.source)))
        h, w = self.source.shape(i)
        y, x = int(rng.integers(h - self.tile + 1)), int(rng.integers(w - self.tile + 1))
        image, mask = self.source.read(i, (y, x, self.tile, self.tile))
        if rng.random() < 0.5:  # flips: aerial imagery has no preferred orientation
            image, mask = image[:, :, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[::-1]
        return _pair(image, mask)


class SlidingTiles(_Base):
    """Every ``tile`` x ``tile`` window at ``stride`` over every scene (edges aligned, no
    padding); ``windows[k] = (scene, y, x, h, w)``."""

    def __init__(self, source: SceneSource, tile: int, stride: int | None = None) -> None:
        super().__init__(source)
        stride = tile if stride is None else stride
        if tile < 1 or stride < 1:
            raise ValueError(f"tile and stride must be >= 1, got {tile}, {stride}")
        self.tile, self.stride = tile, stride
        self.windows: list[tuple[int, int, int, int, int]] = []
        for i in range(len(source)):
            h, w = source.shape(i)
            th, tw = min(tile, h), min(tile, w)
            for y in window_starts(h, th, stride):
                for x in window_starts(w, tw, stride):
                    self.windows.append((i, y, x, th, tw))

    def __len__(self) -> int:
        return len(self.windows)

    def sizes(self) -> set[tuple[int, int]]:
        return {(h, w) for _, _, _, h, w in self.windows}

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, y, x, h, w = self.windows[k]
        return _pair(*self.source.read(i, (y, x, h, w)))


def num_tiles(length: int, tile: int, stride: int) -> int:
    return 1 if tile >= length else math.ceil((length - tile) / stride) + 1


def check_batchable(data: Dataset, batch_size: int) -> None:
    """ValueError if `data` holds items of several sizes and `batch_size` > 1 would stack them."""
    sizes = sorted(data.sizes()) if batch_size > 1 and hasattr(data, "sizes") else []
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
        raise ValueError(f"the scenes have different sizes ({shown}) and cannot be stacked in batches of "
                         f"{batch_size}: use a batch size of 1, or tiles of one size (SPEC option tile=N)")
