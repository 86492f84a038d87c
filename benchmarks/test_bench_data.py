"""Data pipeline costs as ratios against baselines timed in the same run.

- windowed TIFF read (a 512x512 window of a 2048x2048 tiled, zlib-compressed RGB tile) vs
  reading the whole file with ``tifffile.imread``: what reading "only what is needed" saves;
- synthetic scene generation (128x128) vs one training step (forward + backward + AdamW) of
  the demo-sized U-Net (base 16, depth 3) on a batch of 8 such scenes: data is not the
  bottleneck of the demo.
"""
from __future__ import annotations

import timeit

import numpy as np
import pytest
import tifffile
import torch

from fastprune.data.synthetic import generate_scene
from fastprune.data.tiff import TiffImage
from fastprune.models import UNet


def _best(fn, number=3, repeat=5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tile.tif"
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, photometric="rgb", tile=(256, 256), compression="zlib", compressionargs={"level": 1})
    return path


def test_bench_tiff_window_vs_whole(benchmark, big_tiff):
    t = TiffImage(big_tiff)
    whole = _best(lambda: tifffile.imread(big_tiff), number=1, repeat=3)
    result = benchmark(lambda: t.read((700, 900, 512, 512)))
    assert result.shape == (512, 512, 3)
    ratio = benchmark.stats.stats.min / whole
    benchmark.extra_info["whole_file_s"] = whole
    benchmark.extra_info["window_over_whole"] = ratio
    print(f"\nwindow 512^2 of 2048^2 tiled zlib: {ratio:.3f} x the whole-file read")


def test_bench_synthetic_vs_train_step(benchmark):
    torch.manual_seed(0)
    model = UNet(base_width=16, depth=3)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(8, 3, 128, 128)
    y = torch.randint(0, 2, (8, 128, 128))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    step()
    train = _best(step, number=1, repeat=3)
    counter = iter(range(10 ** 9))
    benchmark(lambda: generate_scene(0, next(counter), 128))
    ratio = 8 * benchmark.stats.stats.min / train
    benchmark.extra_info["train_step_s"] = train
    benchmark.extra_info["batch_generation_over_train_step"] = ratio
    print(f"\ngenerating a batch of 8 scenes: {ratio:.3f} x one training step")
