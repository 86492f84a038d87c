"""Deterministic synthetic aerial scenes: ground, vegetation, roads, buildings with roofs and shadows.

Every scene is a pure function of (seed, index), so any scene can be generated on its own, in
any order, in any process. Scales are in pixels at a fixed ground resolution (buildings ~10-36
px across), so a larger ``size`` means a larger area, as with real tiles.

Classes: binary (Inria-like) 0 = background, 1 = building; multi-class 0 = ground,
1 = building, 2 = road, 3 = vegetation (shadows darken what lies under them and keep its class).
"""
from __future__ import annotations

import numpy as np

BINARY_CLASSES = ("background", "building")
MULTICLASS_CLASSES = ("ground", "building", "road", "vegetation")

_GROUND = np.array([[128, 116, 92], [112, 118, 84], [140, 128, 104], [104, 100, 88]], np.float32)
_VEG = np.array([[52, 84, 40], [64, 96, 48], [44, 70, 42]], np.float32)
_ROOF = np.array([[168, 84, 62], [78, 78, 84], [186, 184, 178], [126, 96, 74],
                  [94, 104, 124], [150, 140, 120]], np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise: a (cells+1)^2 random grid, bilinearly interpolated to size x size, in [0, 1]."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]          # (size, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _rect(h: int, w: int, cy: float, cx: float, a: float, b: float, angle: float,
          dy: float = 0.0, dx: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rotated rectangle (half-sides a along, b across) as a bool mask, and the signed
    across-coordinate (for gabled roof halves). Only the bounding box is evaluated."""
    cy, cx = cy + dy, cx + dx
    r = float(np.hypot(a, b)) + 1
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    mask = np.zeros((h, w), bool)
    across = np.zeros((h, w), np.float32)
    if y0 >= y1 or x0 >= x1:
        return mask, across
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    c, s = np.cos(angle), np.sin(angle)
    u = xx * c + yy * s
    v = -xx * s + yy * c
    mask[y0:y1, x0:x1] = (np.abs(u) <= a) & (np.abs(v) <= b)
    across[y0:y1, x0:x1] = v
    return mask, across


def generate_scene(seed: int, index: int, size: int = 128, multiclass: bool = False,
                   density: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image float32 (3, size, size) in [0, 1] and mask int64 (size, size)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), int(size)])
    h = w = size
    # Ground: base colour, large-scale variation, fine texture.
    base = _GROUND[rng.integers(len(_GROUND))] + rng.normal(0, 6, 3).astype(np.float32)
    low = _smooth_noise(rng, size, max(2, size // 32)) - 0.5
    img = base[:, None, None] * (1 + 0.35 * low)[None] + rng.normal(0, 7, (3, h, w)).astype(np.float32)
    cls = np.zeros((h, w), np.int64)
    # Vegetation: thresholded value noise, textured dark greens with crown blobs.
    veg = _smooth_noise(rng, size, max(3, size // 16)) > rng.uniform(0.55, 0.8)
    vcol = _VEG[rng.integers(len(_VEG))]
    crowns = _smooth_noise(rng, size, max(4, size // 5))
    vimg = vcol[:, None, None] * (0.75 + 0.5 * crowns)[None] + rng.normal(0, 5, (3, h, w)).astype(np.float32)
    img = np.where(veg[None], vimg, img)
    cls[veg] = 3
    # Roads: straight bands with a faint centre line.
    road = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angles = []
    for _ in range(rng.integers(1, 3)):
        ang = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.15)
        angles.append(ang)
        py, px = rng.uniform(0.2, 0.8, 2) * size
        d = -(xx - px) * np.sin(ang) + (yy - py) * np.cos(ang)
        half = rng.uniform(3, 6)
        band = np.abs(d) <= half
        road |= band
        gray = rng.uniform(95, 135)
        img[:, band] = gray + rng.normal(0, 4, (3, int(band.sum()))).astype(np.float32)
        line = np.abs(d) <= 0.6
        img[:, line] = np.clip(gray + 70, 0, 255)
    cls[road] = 2
    # Paved lots (distractors: roof-coloured, but flat on the ground and casting no shadow).
    for _ in range(rng.poisson(0.6 * size * size / 128 ** 2)):
        cy, cx = rng.uniform(0, size, 2)
        lot, _ = _rect(h, w, cy, cx, rng.uniform(6, 14), rng.uniform(5, 10), rng.uniform(0, np.pi))
        img[:, lot] = _ROOF[rng.integers(len(_ROOF))][:, None] * rng.uniform(0.85, 1.0) + \
            rng.normal(0, 3, (3, int(lot.sum()))).astype(np.float32)
    # Buildings: rotated rectangles, flat or gabled roofs, shadows cast away from a scene sun.
    sun = rng.uniform(0, 2 * np.pi)
    building = np.zeros((h, w), bool)
    target = rng.poisson(density * 7 * size * size / 128 ** 2)
    tries = 0
    placed = 0
    while placed < target and tries < 6 * target + 10:
        tries += 1
        a, b = rng.uniform(5, 18), rng.uniform(5, 12)
        a, b = min(a, 0.45 * size), min(b, 0.45 * size)  # small scenes
        cy, cx = rng.uniform(a, size - a), rng.uniform(a, size - a)
        ang = (angles[0] if angles and rng.random() < 0.6 else rng.uniform(0, np.pi)) + rng.normal(0, 0.05)
        foot, v = _rect(h, w, cy, cx, a, b, ang)
        grown, _ = _rect(h, w, cy, cx, a + 2, b + 2, ang)
        if not foot.any() or (grown & (building | road)).any():
            continue
        height = rng.uniform(2, 7)
        shadow, _ = _rect(h, w, cy, cx, a, b, ang, dy=height * np.sin(sun), dx=height * np.cos(sun))
        shadow &= ~foot & ~building
        img[:, shadow] *= 0.45
        roof = _ROOF[rng.integers(len(_ROOF))] + rng.normal(0, 8, 3).astype(np.float32)
        shade = np.ones((h, w), np.float32)
        if rng.random() < 0.6:  # gabled: the two halves catch the sun differently
            k = rng.uniform(0.12, 0.25)
            shade = np.where(v > 0, 1 + k, 1 - k).astype(np.float32)
        else:  # flat with a darker parapet
            inner, _ = _rect(h, w, cy, cx, a - 1.5, b - 1.5, ang)
            shade = np.where(inner, 1.0, 0.8).astype(np.float32)
        n = int(foot.sum())
        img[:, foot] = roof[:, None] * shade[foot][None] + rng.normal(0, 4, (3, n)).astype(np.float32)
        building |= foot
        placed += 1
    cls[building] = 1
    # Global exposure jitter, then quantise like an 8-bit camera.
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10)
    img = np.clip(np.rint(img), 0, 255).astype(np.float32) / 255.0
    mask = cls if multiclass else (cls == 1).astype(np.int64)
    return img, mask
