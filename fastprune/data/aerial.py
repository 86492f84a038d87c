"""Inria Aerial Image Labeling and AIRS folders as scene sources (windowed TIFF reads).

Layouts of the public releases (PATH = one split's folder):
- Inria: ``PATH/images/<city><n>.tif`` (RGB, 5000x5000) and ``PATH/gt/<same name>.tif``
  (one band, 0 = background, 255 = building).
- AIRS: ``PATH/image/<name>.tif`` (RGB, 10000x10000) and ``PATH/label/<name>.tif`` (one band,
  0/1; the release also ships 0/255 ``<name>_vis.tif`` pictures, used only when the plain label
  is absent).
Masks map any non-zero value to 1 (building). Image and mask sizes are checked when the
folder is opened (TIFF headers only); pixel data is read per window.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .tiff import TiffImage
from .tiles import FilePairs, Window

_LAYOUTS = {"inria": ("images", "gt", ()), "airs": ("image", "label", ("_vis",))}
_EXT = (".tif", ".tiff")


def to_float_image(a: np.ndarray, path: str) -> np.ndarray:
    """(H, W[, S]) image array -> float32 (3, H, W) in [0, 1] (first three bands)."""
    if a.ndim == 2:
        raise ValueError(f"{path}: expected an RGB image, got a single band")
    if a.shape[-1] < 3:
        raise ValueError(f"{path}: expected at least 3 bands, got {a.shape[-1]}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported image dtype {a.dtype}")
    return np.ascontiguousarray(f.transpose(2, 0, 1))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXT and p.is_file())


class AerialFolder(FilePairs):
    """Scene source over an Inria or AIRS split folder; binary classes (background, building)."""

    classes = ("background", "building")
    num_classes = 2
    ignore_index = None

    def __init__(self, path: str | os.PathLike, layout: str = "inria", open_files: int = 4) -> None:
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
        root = Path(path)
        img_dir, lab_dir, alt = _LAYOUTS[layout]
        if not (root / img_dir).is_dir():
            raise ValueError(f"{layout}: {root} has no '{img_dir}/' folder (expected {layout} layout "
                             f"{img_dir}/ + {lab_dir}/)")
        if not (root / lab_dir).is_dir():
            raise ValueError(f"{layout}: {root} has no '{lab_dir}/' folder with the masks "
                             "(a test split without ground truth cannot be evaluated)")
        self.layout, self.root = layout, root
        self.images = _images(root / img_dir)
        if not self.images:
            raise ValueError(f"{layout}: no .tif images in {root / img_dir}")
        self.labels: list[Path] = []
        for im in self.images:
            for suffix in ("",) + alt:
                cands = [root / lab_dir / (im.stem + suffix + e) for e in _EXT]
                found = next((c for c in cands if c.is_file()), None)
                if found:
                    break
            if found is None:
                raise ValueError(f"{layout}: no mask for {im} in {root / lab_dir}")
            self.labels.append(found)
        self._open: OrderedDict[str, TiffImage] = OrderedDict()
        self._max_open = max(2, int(open_files))
        self._shapes: list[tuple[int, int]] = []
        for im, lab in zip(self.images, self.labels):
            a, b = self._tiff(im), self._tiff(lab)
            if a.shape[:2] != b.shape[:2]:
                raise ValueError(f"{layout}: mask {lab} is {b.height}x{b.width} but image {im} is "
                                 f"{a.height}x{a.width}")
            if len(a.shape) != 3 or a.shape[2] < 3:
                raise ValueError(f"{im}: expected an RGB image, got shape {a.shape}")
            self._shapes.append((a.height, a.width))

    def _tiff(self, path: Path) -> TiffImage:
        key = str(path)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        t = TiffImage(path)
        self._open[key] = t
        while len(self._open) > self._max_open:
            self._open.popitem(last=False)[1].close()
        return t

    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        image = to_float_image(self._tiff(self.images[i]).read(window), str(self.images[i]))
        m = self._tiff(self.labels[i]).read(window)
        if m.ndim == 3:
            m = m[..., 0]
        return image, (m > 0).astype(np.int64)

    def __getstate__(self) -> dict:  # DataLoader workers reopen files themselves
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state
