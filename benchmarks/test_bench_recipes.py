"""Time per training epoch of each docs/recipes.md experiment on this CPU, measured on a few
batches, and a GPU estimate from the MAC count (an estimate, not a measurement).

For every recipe model at its full size and input size: one warm-up step, then the best of
`STEPS` timed training steps (forward + cross-entropy + backward + AdamW update) on a measured
batch with torch's threads; epoch time = time per image x images per epoch. The measured batch
is the recipe's for VGG-16 (32x32 images: small batches mostly time thread synchronisation) and
2 images for the segmentation networks (their step time grows linearly with the batch, and a
full-size SegNet step on the recipe's 4 images at 360x480 takes minutes on 2 cores). The GPU figure assumes the step
costs 3x the forward MACs (forward, and the backward's two products), 2 FLOP per MAC, at
`GPU_TFLOPS` sustained; rescale it for another GPU by the ratio of sustained rates.

    python -m pytest benchmarks/test_bench_recipes.py --benchmark-only -s
"""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fastprune.graph.cost import count
from fastprune.models import create

STEPS = 2
GPU_TFLOPS = 40.0  # assumed sustained mixed-precision rate of an A100-class GPU on these convnets

# recipe, model SPEC name and options, input (C, H, W), recipe batch, measured batch, samples per epoch, classes
RECIPES = [
    ("VGG-16 / CIFAR-10", "vgg16", {}, (3, 32, 32), 128, 128, 50000, 10),
    ("SegNet / CamVid", "segnet", {}, (3, 360, 480), 4, 2, 367, 12),
    ("DeepLabv3+ (ResNet-50) / CamVid", "deeplabv3plus", {}, (3, 360, 480), 4, 2, 367, 12),
    ("TernausNet / Inria (512 px crops)", "ternausnet", {}, (3, 512, 512), 8, 2, 4000, 2),
    ("U-Net (base 64, depth 4) / AIRS and layer pruning (512 px crops)", "unet",
     {"base_width": 64, "depth": 4}, (3, 512, 512), 8, 2, 4000, 2),
]


def _step(model: torch.nn.Module, shape, classes: int):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step(n: int) -> None:
        x = torch.randn(n, *shape)
        out = model(x)
        target = torch.randint(0, max(classes, 2), (n,) if out.ndim == 2 else (n, *out.shape[-2:]))
        logits = torch.cat([torch.zeros_like(out), out], 1) if out.shape[1] == 1 else out
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits, target).backward()
        opt.step()

    return step


@pytest.mark.parametrize("recipe", RECIPES, ids=[r[0] for r in RECIPES])
def test_epoch_time(benchmark, recipe):
    name, spec, opts, shape, batch, measured, samples, classes = recipe
    model = create(spec, **opts)
    macs = count(model.eval(), torch.zeros(1, *shape)).macs
    step = _step(model, shape, classes)
    step(min(measured, 2))  # warm-up (allocator, kernels)
    benchmark.pedantic(step, args=(measured,), rounds=STEPS, iterations=1)
    per_image = benchmark.stats.stats.min / measured
    sec = per_image * batch
    cpu_epoch = per_image * samples
    gpu_epoch = 3 * 2 * macs * samples / (GPU_TFLOPS * 1e12)
    print(f"\n| {name} | {batch} x {shape[1]}x{shape[2]} | {macs / 1e9:.2f} GMAC | {sec:.2f} s per batch of {batch} (measured on {measured}) | "
          f"{samples} samples: CPU {cpu_epoch / 3600:.2f} h/epoch | GPU estimate {gpu_epoch:.0f} s/epoch | "
          f"threads {torch.get_num_threads()}")
    benchmark.extra_info.update(macs=macs, seconds_per_batch=sec, cpu_epoch_s=cpu_epoch, gpu_epoch_estimate_s=gpu_epoch)
