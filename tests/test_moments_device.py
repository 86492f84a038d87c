"""The CUDA moments algorithm, run on the CPU by its emulation, against float64.

`_C.moments_emulate_device` executes the device back-end's plan, probe shifts, lane sums, lane
trees, Chan merges, Gram groups, tensor-core operand rounding (3xTF32 / 3xBF16) and second-pass
lanes from the same `__host__ __device__` code the kernels use (fastprune/moments_plan.h). The
data put large-mean outliers (50-150 sigma) on the first sample of every split, where a shift by
the split's first sample would lose the fp32 sums' precision.
"""
from __future__ import annotations

import pytest
import torch

from fastprune import ChannelMoments
from fastprune._ext import _C
from fastprune._views import view
from fastprune.stats.reference import reference_moments

TOL = 1e-5
STATS = ["count", "mean", "var", "abs_mean", "zero_fraction", "min", "max"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def plan_of(x: torch.Tensor, cov: bool = True, stat_blocks: int | None = None, gram_blocks: int | None = None):
    t = _C.MomentsTargets()
    if stat_blocks:
        t.stat_blocks = stat_blocks
    if gram_blocks:
        t.gram_blocks = gram_blocks
    return _C.moments_device_plan(view(x), cov, t)


def split_starts(plan) -> list[tuple[int, int]]:
    """(image, first pixel) of every split, recomputed from the plan's documented partition."""
    if plan.splits_per_image == 0:
        return [(k * plan.images_per_split, 0) for k in range(plan.splits)]
    return [(k // plan.splits_per_image, (k % plan.splits_per_image) * plan.tiles_per_split * plan.tile)
            for k in range(plan.splits)]


def outlier_data(shape, dtype, layout, mean_scale, seed=0, **targets):
    """Correlated channels with means mean_scale * U(-1, 1) and an outlier of +-(50..150) sigma on
    the first sample of each split of the device plan (the plan of the final tensor)."""
    g = torch.Generator().manual_seed(seed)
    four = len(shape) == 4
    n, c = shape[0], shape[1]
    pix = shape[2] * shape[3] if four else 1
    base = torch.randn(n * pix, c, generator=g, dtype=torch.float64)
    mix = torch.randn(c, c, generator=g, dtype=torch.float64) / c**0.5 + torch.eye(c, dtype=torch.float64)
    sigma = torch.rand(c, generator=g, dtype=torch.float64) * 2 + 0.5
    mean = (torch.rand(c, generator=g, dtype=torch.float64) * 2 - 1) * mean_scale
    rows = base @ mix * sigma + mean  # (samples, C)
    x = rows.reshape(n, shape[2], shape[3], c).permute(0, 3, 1, 2) if four else rows
    x = x.contiguous()
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "columns":  # (N, C) stored column-major
        x = x.t().contiguous().t()
    plan = plan_of(x.to(dtype), **targets)
    for image, p0 in split_starts(plan):
        sign = torch.randint(0, 2, (c,), generator=g, dtype=torch.float64) * 2 - 1
        far = mean + sign * (50 + 100 * torch.rand(c, generator=g, dtype=torch.float64)) * sigma * mix.norm(dim=0)
        if four:
            x[image, :, p0 // shape[3], p0 % shape[3]] = far
        else:
            x[p0] = far
    return x.to(dtype), plan


def emulated(x: torch.Tensor, cov: bool = True, **targets) -> ChannelMoments:
    """A ChannelMoments fed by the emulated device kernels (as ChannelMoments._kernel feeds it)."""
    m = ChannelMoments(x.shape[1], covariance=cov)
    out, parts = m._buffer(torch.device("cpu"))
    _C.moments_emulate_device(view(x), out.data_ptr(), out.numel(), cov, **targets)
    m._absorb(int(out[0]), int(out[1]), **parts)
    return m


def check(m: ChannelMoments, x: torch.Tensor, tol: float = TOL) -> None:
    ref = reference_moments(x)
    names = STATS + (["cov", "corr"] if m.covariance else []) + (["msd"] if x.dim() == 4 else [])
    for k in names:
        err = rel(getattr(m, k), ref[k])
        assert err <= tol, f"{k}: relative error {err:.3g} > {tol:g}"
    if m.covariance:
        assert float(m.corr.abs().max()) <= 1.0
        assert torch.equal(m.cov, m.cov.t())


# (shape, dtype, layout, mean scale, block targets): the launch's own plan, and lowered targets
# that make splits of several tiles, several images per split and Gram groups of several splits
CASES = {
    "nchw-fp32-within": ((3, 70, 48, 64), torch.float32, "nchw", 1e4, {}),
    "nchw-fp32-long-splits": ((3, 70, 48, 64), torch.float32, "nchw", 1e4, dict(stat_blocks=16, gram_blocks=6)),
    "last-bf16-c130": ((3, 130, 40, 52), torch.bfloat16, "channels_last", 1e2, {}),
    "last-fp32-c130-groups": ((3, 130, 40, 52), torch.float32, "channels_last", 1e3, dict(stat_blocks=8, gram_blocks=6)),
    "nchw-fp16-whole-images": ((300, 20, 6, 7), torch.float16, "nchw", 1e2, dict(stat_blocks=60, gram_blocks=5)),
    "nchw-bf16-vector": ((2, 64, 64, 64), torch.bfloat16, "nchw", 1e2, {}),
    "matrix-fp64-rows": ((5000, 33), torch.float64, "nchw", 1e4, dict(stat_blocks=4, gram_blocks=1)),
    "matrix-fp32-columns": ((5000, 33), torch.float32, "columns", 1e4, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_emulated_device_partition_matches_float64_with_outliers(case):
    shape, dtype, layout, scale, targets = CASES[case]
    x, plan = outlier_data(shape, dtype, layout, scale, **targets)
    assert plan.splits > 1
    check(emulated(x, **targets), x)
    check(emulated(x, cov=False, **targets), x)


def test_cases_reach_every_partition_path():
    plans = {k: outlier_data(s, d, l, m, **t)[1] for k, (s, d, l, m, t) in CASES.items()}
    assert plans["nchw-fp32-long-splits"].tiles_per_split > 1
    assert plans["nchw-fp32-long-splits"].splits_per_group > 1
    assert plans["nchw-fp32-within"].splits_per_image > 1 and plans["nchw-fp32-within"].vec == 4
    assert plans["nchw-bf16-vector"].vec == 8
    assert plans["last-bf16-c130"].block_pairs == 6  # C > 128: three 64-blocks, a partial one
    assert plans["last-fp32-c130-groups"].splits_per_group > 1
    whole = plans["nchw-fp16-whole-images"]
    assert whole.splits_per_image == 0 and whole.images_per_split > 1 and whole.splits_per_group > 1
    assert whole.vec == 1  # 42-pixel maps: scalar loads
    assert plans["matrix-fp64-rows"].tiles_per_split > 1 and plans["matrix-fp64-rows"].splits_per_group > 1


def test_shift_is_a_tile_mean_not_the_first_sample():
    """An outlier on a split's first sample moves the split's shift by 1/kProbe of its distance:
    the shifted fp32 sums stay small and the variance keeps the 1e-5 bar (the first-sample
    shift this replaced lost ~1e-4 on such data)."""
    x, plan = outlier_data((2, 8, 64, 64), torch.float32, "nchw", 1e4, seed=3)
    m = emulated(x, cov=False)
    assert rel(m.var, reference_moments(x)["var"]) <= 1e-6


def f(shape, dtype, strides=None, device=_C.Device.cuda):
    """A View of a CUDA array that is never read (plans depend on shape, strides and alignment)."""
    if strides is None:
        strides = torch.empty(shape, device="meta").stride()
    return _C.View(0, dtype, list(shape), list(strides), device, 0, 0)


def test_launch_plans_of_the_issue_shapes():
    big = _C.moments_device_plan(f((8, 70, 512, 512), _C.DType.bf16), True)
    assert big.vec == 8 and big.splits_per_image > 1 and big.splits >= 512 and big.tiles_per_split > 1
    assert big.block_pairs == 3 and big.groups > 1
    assert big.workspace_doubles * 8 <= 96 << 20  # Gram partials capped at 64 MiB
    small = _C.moments_device_plan(f((4096, 64, 7, 7), _C.DType.f32), True)
    assert small.splits_per_image == 0 and small.images_per_split > 1 and small.vec == 1
    last = _C.moments_device_plan(f((8, 64, 512, 512), _C.DType.f16, (64 * 512 * 512, 1, 512 * 64, 64)), True)
    assert last.vec == 8 and last.channel_groups == 2
    assert _C.moments_workspace_size(f((8, 64, 512, 512), _C.DType.bf16), True) == \
        8 * _C.moments_device_plan(f((8, 64, 512, 512), _C.DType.bf16), True).workspace_doubles
    assert _C.moments_workspace_size(f((8, 64, 512, 512), _C.DType.bf16, device=_C.Device.cpu), True) == 0
