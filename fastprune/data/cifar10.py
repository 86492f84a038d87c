"""CIFAR-10, binary version (``cifar-10-batches-bin``), as a classification data set.

The binary release holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training, 10000
records each) and ``test_batch.bin``. A record is 3073 bytes: the label (one byte, 0..9),
then the 32x32 image as 1024 red, 1024 green and 1024 blue bytes, rows first. The pickled
Python version (``data_batch_1`` without ``.bin``) is never read: unpickling runs code.

Files are memory-mapped; a file whose size is not a whole number of records (a truncated
download) or a label outside 0..9 is a ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE  # 3073 bytes
SPLITS = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}


def read_records(path: Path) -> np.ndarray:
    """A record file memory-mapped as uint8 (n, 3073); truncation and bad labels are errors."""
    size = path.stat().st_size
    if size == 0 or size % RECORD:
        raise ValueError(f"cifar10: {path} is {size} bytes, not a whole number of {RECORD}-byte records "
                         f"(a truncated file? {size // RECORD} whole records and {size % RECORD} bytes left over)")
    records = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // RECORD, RECORD))
    labels = records[:, 0]
    if int(labels.max()) >= len(CLASSES):
        row = int(np.argmax(labels >= len(CLASSES)))
        raise ValueError(f"cifar10: {path} record {row} has label {int(labels[row])}, outside 0..9 "
                         "(not a CIFAR-10 binary file? CIFAR-100's binary version has two label bytes)")
    return records


def _folder(root: Path) -> Path:
    """PATH itself, or its ``cifar-10-batches-bin`` subfolder (where the archive unpacks)."""
    if any((root / f).is_file() for names in SPLITS.values() for f in names):
        return root
    sub = root / "cifar-10-batches-bin"
    if sub.is_dir():
        return sub
    if any((root / f[:-4]).is_file() for names in SPLITS.values() for f in names):
        raise ValueError(f"cifar10: {root} holds the pickled Python version; fastprune reads the binary version "
                         "(cifar-10-binary.tar.gz: data_batch_*.bin, test_batch.bin) and never unpickles")
    raise ValueError(f"cifar10: no data_batch_*.bin or test_batch.bin in {root} (the CIFAR-10 binary version)")


class Cifar10(Dataset):
    """Images float32 (3, 32, 32) in [0, 1] and labels int64 () of one split.

    ``split``: "train" (every ``data_batch_*.bin`` present, in order) or "test"
    (``test_batch.bin``); ``n``: the first n records only; ``augment``: random 4-pixel shifts
    (zero padding) and horizontal flips, the standard CIFAR training augmentation, drawn as a
    pure function of (``seed``, epoch, index) (``set_epoch`` is called by
    ``fastprune.train.fit``).
    """

    task = "classification"
    classes = CLASSES
    num_classes = len(CLASSES)
    ignore_index = None

    def __init__(self, path: str | os.PathLike, split: str = "train", n: int | None = None,
                 augment: bool = False, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"cifar10: split must be one of {sorted(SPLITS)}, got {split!r}")
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"cifar10: {root} is not a folder")
        folder = _folder(root)
        self.files = [folder / f for f in SPLITS[split] if (folder / f).is_file()]
        if not self.files:
            raise ValueError(f"cifar10: no {' or '.join(SPLITS[split])} in {folder} (split={split})")
        self._parts = [read_records(f) for f in self.files]
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])
        total = int(self._starts[-1])
        if n is not None and not 1 <= int(n):
            raise ValueError(f"cifar10: n must be >= 1, got {n}")
        self.n = total if n is None else min(int(n), total)
        self.split, self.augment, self.seed, self.epoch = split, bool(augment), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def record(self, i: int) -> tuple[np.ndarray, int]:
        """Image uint8 (3, 32, 32) and label of record ``i`` (across the split's files)."""
        if not 0 <= i < self.n:
            raise IndexError(f"cifar10 record {i} out of range [0, {self.n})")
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        rec = np.asarray(self._parts[part][i - self._starts[part]])
        return rec[1:].reshape(3, SIDE, SIDE), int(rec[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.record(i)
        x = image.astype(np.float32) / 255.0
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
            padded = np.zeros((3, SIDE + 8, SIDE + 8), np.float32)
            padded[:, 4:4 + SIDE, 4:4 + SIDE] = x
            x = padded[:, 4 + dy:4 + dy + SIDE, 4 + dx:4 + dx + SIDE]
            if rng.random() < 0.5:
                x = x[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(label, dtype=torch.int64)

