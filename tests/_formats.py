"""Tiny data sets written byte for byte in the public releases' formats (CIFAR-10 binary,
CamVid colour labels, Inria GeoTIFF-style tiles), for tests that read them back as a user's
download would be read. Written here from the format descriptions, not with fastprune."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CIFAR_RECORD = 3073  # label byte + 32*32 red + 32*32 green + 32*32 blue


def cifar_records(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 3, 32, 32), labels uint8 (n,)): the class is visible in the image
    (a bright square whose position depends on the label) so a tiny net can learn it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 80, (n, 3, 32, 32)).astype(np.uint8)
    for i, lab in enumerate(labels):
        y, x = divmod(int(lab), 5)
        images[i, int(lab) % 3, 4 + 12 * y:12 + 12 * y, 1 + 6 * x:6 + 6 * x] = 250
    return images, labels


def write_cifar_file(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    with open(path, "wb") as f:
        for img, lab in zip(images, labels):
            f.write(bytes([int(lab)]))
            for c in range(3):  # red plane, green plane, blue plane, each row by row
                f.write(img[c].tobytes(order="C"))
    return path


def write_cifar10(root: Path, train: tuple[int, ...] = (24, 16), test: int = 16) -> dict[str, tuple]:
    """`root/cifar-10-batches-bin/` with data_batch_1..len(train).bin and test_batch.bin;
    returns {"train": (images, labels), "test": (images, labels)}."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, n in enumerate(train):
        im, lab = cifar_records(n, seed=i)
        write_cifar_file(folder / f"data_batch_{i + 1}.bin", im, lab)
        parts.append((im, lab))
    tim, tlab = cifar_records(test, seed=99)
    write_cifar_file(folder / "test_batch.bin", tim, tlab)
    return {"train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
            "test": (tim, tlab)}


# CamVid colours of SegNet's 11 classes (one colour each, from the original 32-colour release).
CAMVID_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]


def write_camvid(root: Path, n: int = 4, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """The Kaggle release's layout: `root/train/*.png` and `root/train_labels/*_L.png` (RGB
    colour labels), and the same for `val/` and `test/`; a scene of horizontal class bands so it is learnable."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_labels").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cuts = np.sort(rng.integers(1, h, 3))
            cls = np.full((h, w), 3, np.int64)  # road at the bottom, then car, building, sky on top
            cls[:cuts[2]], cls[:cuts[1]], cls[:cuts[0]] = 8, 1, 0
            colours = np.array(CAMVID_COLOURS, np.uint8)
            label = colours[cls]
            image = (0.5 * label + rng.integers(0, 60, (h, w, 3))).clip(0, 255).astype(np.uint8)
            name = f"0001TP_{i:06d}"
            Image.fromarray(image).save(root / split / f"{name}.png")
            Image.fromarray(label).save(root / f"{split}_labels" / f"{name}_L.png")
    return root


def write_aerial(root: Path, layout: str = "inria", n: int = 2, size: int = 96, seed: int = 0) -> Path:
    """Inria's layout: `root/images/<city><k>.tif` (RGB uint8) and `root/gt/<same>.tif` (one
    band, 0 background / 255 building); AIRS's: `root/image/<name>.tif` and
    `root/label/<name>.tif` (0/1). Buildings are bright rectangles."""
    import tifffile

    rng = np.random.default_rng(seed)
    images, labels, on = {"inria": ("images", "gt", 255), "airs": ("image", "label", 1)}[layout]
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / labels).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        gt = np.zeros((size, size), np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, size - 12, 2)
            gt[y:y + rng.integers(6, 12), x:x + rng.integers(6, 12)] = on
        image = rng.integers(40, 110, (size, size, 3)).astype(np.uint8)
        image[gt > 0] = rng.integers(180, 240, 3).astype(np.uint8)
        name = f"austin{i + 1}.tif" if layout == "inria" else f"christchurch_{i + 1}.tif"
        tifffile.imwrite(root / images / name, image, photometric="rgb")
        tifffile.imwrite(root / labels / name, gt)
    return root
