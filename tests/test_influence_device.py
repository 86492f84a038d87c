"""The CUDA influence algorithms, run on the CPU by their emulation, against float64.

`_C.influence_emulate_device` executes the device back-end's plan, tiles, staged values, lane
sums, lane trees and fp64 merges of the shifted auto-moments, and `_C.gram_gather_emulate_device`
the block pairs, position groups, chunks and fp64 flushes of the patch Gram, from the same
`__host__ __device__` code the kernels use (fastprune/influence_plan.h). The data have large means
and outliers of 50-150 sigma on the first position of every tile of the device plan (where a unit's
fp32 sum starts).
"""
from __future__ import annotations

import pytest
import torch

from fastprune._ext import _C
from fastprune._views import view
from fastprune.stats.influence import InfluenceMoments, _JobSums, _plan_args, sample_positions
from fastprune.stats.influence_geometry import ConvGeometry, shift_plan
from fastprune.stats.influence_reference import auto_moments_reference, patch_gram_reference

TOL = 1e-5
CELL = 19  # table fields per cell (influence_plan.h)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative error of a channel's moments (C, taps, taps), each channel against its own
    largest entry (off-diagonal sums of a channel with a mean near 0 cancel; the influence of a
    channel is judged on its own scale)."""
    scale = b.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-300)
    return float(((a - b).abs() / scale).max())


def rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (a Gram's entries can be ~0; its scale is its largest entry)."""
    return float((a - b).abs().max() / b.abs().max())


def targets(tile_rows: int = 0, tile_cols: int = 0, run: int = 0, images: int = 0, full3: bool = True,
            merge64: bool = True):
    t = _C.InfluenceTargets()
    t.tile_rows, t.tile_cols, t.steps_per_unit, t.images_per_tile = tile_rows, tile_cols, run, images
    t.full3, t.merge64 = full3, merge64
    return t


DTYPES = {torch.float32: _C.DType.f32, torch.float16: _C.DType.f16, torch.bfloat16: _C.DType.bf16,
          torch.float64: _C.DType.f64}


def meta_view(shape, dtype, strides=None, device=_C.Device.cuda):
    """A View of an array that is never read (plans depend on shape and strides only)."""
    if strides is None:
        strides = torch.empty(shape, device="meta").stride()
    return _C.View(0, dtype, list(shape), list(strides), device, 0, 0)


def layout_strides(shape, layout: str):
    t = torch.empty(shape, device="meta")
    return (t.to(memory_format=torch.channels_last) if layout == "channels_last" else t).stride()


def device_plan(shape, dtype, layout, g: ConvGeometry, **tg):
    """The device plan (and table) of a tensor of this shape, dtype and layout."""
    args, keep = _plan_args(shift_plan(g, shape[2], shape[3]))
    v = meta_view(shape, DTYPES[dtype], layout_strides(shape, layout))
    return _C.influence_device_plan(v, args, targets(**tg))


def tile_starts(plan, table) -> list[tuple[int, int]]:
    """(row, column) of the first position of every tile, from the table's documented layout
    (per cell: y0 sy x0 sx nrows ncols ...)."""
    starts = []
    for ci in range(plan.cells):
        y0, sy, x0, sx, nrows, ncols = table[CELL * ci:CELL * ci + 6]
        for ty in range(-(-nrows // plan.tile_rows)):
            for tx in range(-(-ncols // plan.tile_cols)):
                starts.append((y0 + ty * plan.tile_rows * sy, x0 + tx * plan.tile_cols * sx))
    return starts


def cells(plan, table) -> list[dict]:
    """Per cell: tiles per image, images per tile, tile steps, steps per unit and whether it takes
    the whole-3x3 lane loop (table layout)."""
    keys = ["tpi", "ni", "steps", "run"]
    return [dict(zip(keys, table[CELL * ci + 10:CELL * ci + 14]), full3=table[CELL * ci + 18]) for ci in range(plan.cells)]


def outlier_data(shape, dtype, layout, g: ConvGeometry, mean_scale: float, seed: int = 0, device: str = "cpu",
                 **tg) -> torch.Tensor:
    """Channels with means mean_scale * U(-1, 1), unit std, and +-(50..150) sigma outliers on the
    first position of every tile of the device plan, in every image (made on `device`)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    n, c, h, w = shape
    f64 = dict(generator=gen, dtype=torch.float64, device=device)
    mean = (torch.rand(c, **f64) * 2 - 1) * mean_scale
    x = torch.randn(n, c, h, w, **f64) + mean[None, :, None, None]
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    plan, table = device_plan(shape, dtype, layout, g, **tg)
    for y, xx in tile_starts(plan, table):
        sign = torch.randint(0, 2, (n, c), generator=gen, device=device).to(torch.float64) * 2 - 1
        x[:, :, y, xx] = mean + sign * (50 + 100 * torch.rand(n, c, **f64))
    return x.to(dtype)


def emulated_sums(x: torch.Tensor, g: ConvGeometry, **tg) -> _JobSums:
    """The emulated device job sums of x."""
    sums = _JobSums(shift_plan(g, x.shape[2], x.shape[3]), x.shape[1], torch.device("cpu"))
    _C.influence_emulate_device(view(x), sums._host_args, sums.out, targets(**tg))
    return sums


def emulated_moments(x: torch.Tensor, g: ConvGeometry, **tg) -> torch.Tensor:
    """(C, taps, taps) auto-moments from the emulated device job sums (folded as
    InfluenceMoments folds the kernel's)."""
    acc = InfluenceMoments(x.shape[1], (g.kh, g.kw), (g.sh, g.sw), (g.pt, g.pl), (g.dh, g.dw))
    assert acc.geometry == g
    acc._fold(emulated_sums(x, g, **tg))
    return acc.moments


# (shape, dtype, layout, geometry (k, s, p, d), mean scale, tile overrides)
CASES = {
    "nchw-fp32-many-tiles": ((2, 6, 40, 52), torch.float32, "nchw", (3, 1, 1, 1), 1e4, dict(tile_rows=4, tile_cols=8, run=1)),
    "nchw-fp32-runs": ((2, 6, 40, 52), torch.float32, "nchw", (3, 1, 1, 1), 1e4, dict(tile_rows=4, tile_cols=8, run=3)),
    "nchw-fp32-default-tiles": ((2, 8, 70, 300), torch.float32, "nchw", (3, 1, 1, 1), 1e3, {}),
    "last-bf16-c130": ((2, 130, 12, 14), torch.bfloat16, "channels_last", (3, 1, 1, 1), 1e2, {}),
    "nchw-fp16-stride2-dil2": ((3, 5, 23, 21), torch.float16, "nchw", (5, 2, 2, 2), 1e2, dict(tile_rows=3, tile_cols=4)),
    "last-fp64-7x7-same": ((2, 9, 19, 17), torch.float64, "channels_last", (7, 1, 3, 1), 1e4, {}),
    "nchw-fp32-c130-1x1": ((2, 130, 9, 10), torch.float32, "nchw", (1, 1, 0, 1), 1e4, {}),
    "last-fp32-wide-window": ((1, 40, 64, 64), torch.float32, "channels_last", (3, 1, 0, 20), 1e3, {}),
    "nchw-bf16-stride2": ((2, 3, 33, 30), torch.bfloat16, "nchw", (3, 2, 1, 1), 1e2, dict(tile_rows=2, tile_cols=2)),
    "nchw-fp16-small-maps": ((300, 5, 6, 7), torch.float16, "nchw", (3, 1, 1, 1), 1e2, {}),
    "nchw-bf16-vectors": ((2, 5, 20, 40), torch.bfloat16, "nchw", (3, 1, 1, 1), 1e2, dict(tile_rows=4, tile_cols=8)),
    "nchw-fp64-vectors-stride2": ((2, 3, 17, 18), torch.float64, "nchw", (5, 2, 2, 2), 1e4, {}),
    "last-fp32-small-maps-partial": ((32, 40, 5, 6), torch.float32, "channels_last", (3, 1, 1, 1), 1e4,
                                     dict(images=6, run=2)),
}


def case(name):
    shape, dtype, layout, (k, s, p, d), scale, tg = CASES[name]
    g = ConvGeometry.parse(k, s, p, d)
    return outlier_data(shape, dtype, layout, g, scale, **tg), g, tg


@pytest.mark.parametrize("name", list(CASES))
def test_emulated_auto_moments_match_float64_with_outliers(name):
    x, g, tg = case(name)
    got = emulated_moments(x, g, **tg)
    assert rel(got, auto_moments_reference(x, g)) <= TOL


def test_cases_reach_every_partition_path():
    plans = {}
    for name, (shape, dtype, layout, (k, s, p, d), _, tg) in CASES.items():
        plans[name] = device_plan(shape, dtype, layout, ConvGeometry.parse(k, s, p, d), **tg)
    many, mt = plans["nchw-fp32-many-tiles"]
    assert many.planar == 1 and many.channels_per_block == 1 and many.units > 2 * 9 * 4  # a unit a tile
    assert max(c["tpi"] for c in cells(many, mt)) > 1 and all(c["run"] == 1 for c in cells(many, mt))
    runs, rt = plans["nchw-fp32-runs"]  # units of three tile steps (the last of a cell shorter)
    assert all(c["run"] == 3 for c in cells(runs, rt)) and runs.units < many.units
    assert any(c["steps"] % 3 for c in cells(runs, rt))
    wide, wt = plans["nchw-fp32-default-tiles"]
    assert (wide.tile_rows, wide.tile_cols) == (48, 128) and max(c["tpi"] for c in cells(wide, wt)) == 6
    last, lt = plans["last-bf16-c130"]
    assert last.planar == 0 and last.channels_per_block == 32 and last.channel_groups == 5  # a partial group
    assert max(c["run"] for c in cells(last, lt)) > 1  # units of several tile steps
    assert plans["last-fp64-7x7-same"][0].channels_per_block == 16  # C = 9: the next power of two
    one, _ = plans["nchw-fp32-c130-1x1"]
    assert one.jobs == 1 and one.channel_groups == 130
    small, st = plans["nchw-fp16-small-maps"]  # several images a tile, several steps a unit
    assert min(c["ni"] for c in cells(small, st)) > 1 and small.units < small.cells * 300
    part, pt = plans["last-fp32-small-maps-partial"]  # 32 images in tiles of 6: a last step of 2
    assert all(c["ni"] == 6 and c["steps"] == 6 and c["run"] == 2 for c in cells(part, pt))
    for name in ("nchw-fp32-default-tiles", "last-bf16-c130", "nchw-fp16-small-maps"):  # 3 x 3, padding 1
        assert any(c["full3"] for c in cells(*plans[name]))  # the interior (and the top row's cell)
    for name in ("nchw-fp16-stride2-dil2", "last-fp64-7x7-same", "nchw-bf16-stride2", "last-fp32-wide-window"):
        assert not any(c["full3"] for c in cells(*plans[name]))
    # 16-byte staging vectors (fp32: 4, bf16: 8, fp64: 2), and element loads where rows are unaligned
    assert plans["nchw-fp32-many-tiles"][0].vec == 4 and plans["nchw-bf16-vectors"][0].vec == 8
    assert plans["nchw-fp64-vectors-stride2"][0].vec == 2
    assert plans["nchw-bf16-stride2"][0].vec == 1 and plans["last-bf16-c130"][0].vec == 1
    shrunk, _ = plans["last-fp32-wide-window"]  # the staged tile only fits with fewer channels
    assert shrunk.channels_per_block < 32 and (shrunk.tile_rows, shrunk.tile_cols) == (1, 1)
    assert all(p.stage_floats <= 8000 for p, _ in plans.values())  # kStageFloats


@pytest.mark.parametrize("name", ["nchw-fp32-default-tiles", "last-bf16-c130", "nchw-fp16-small-maps"])
def test_whole_3x3_lane_loop_gives_the_general_loops_bits(name):
    """lane_sums_full3 loads each partner row once for the 13 deltas of the interior; it must make
    the same products in the same order as the general lane loop."""
    x, g, tg = case(name)
    a = emulated_sums(x, g, **tg).sums
    b = emulated_sums(x, g, full3=False, **tg).sums
    assert torch.equal(a, b) and a.abs().sum() > 0


def test_fp64_merge_of_the_units_is_needed():
    """The probe. With one position per unit (1 x 1 tiles, one a unit) every unit partial is one
    fp32 product, so the emulated device sum is an fp64 sum of rounded fp32 products: within 1e-8
    of float64. With the
    partials summed in fp32 (merge64 = False; each of the second pass's lanes sums every 8th unit,
    then the lanes' tree) the same check fails (~8e-7 on this data: under the 1e-5 bar, as raw
    moments have no cancellation, but 100 times the fp64 merge's error): the tests see the merge
    order and precision the kernels use."""
    g = ConvGeometry.parse(3, 1, 1, 1)
    tg = dict(tile_rows=1, tile_cols=1, run=1)
    x = outlier_data((4, 4, 96, 96), torch.float32, "nchw", g, 1e4, **tg)
    ref = auto_moments_reference(x, g)
    assert rel(emulated_moments(x, g, **tg), ref) <= 1e-8
    assert rel(emulated_moments(x, g, merge64=False, **tg), ref) > 1e-7


def test_launch_plans_of_the_issue_shapes():
    g = ConvGeometry.parse(3, 1, 1, 1)
    args, keep = _plan_args(shift_plan(g, 512, 512))
    big = meta_view((8, 70, 512, 512), _C.DType.bf16)
    plan, table = _C.influence_device_plan(big, args)
    assert plan.planar == 1 and (plan.tile_rows, plan.tile_cols) == (48, 128) and plan.channel_groups == 70
    assert plan.units >= 8 * 11 * 4 and len(table) == plan.table_len  # the interior: 11 x 4 tiles an image
    assert _C.influence_workspace_size(big, plan) <= 8 << 20  # partials: a few % of the input
    last = meta_view((8, 64, 512, 512), _C.DType.f32, (64 * 512 * 512, 1, 512 * 64, 64))
    lp, lt = _C.influence_device_plan(last, args)
    assert lp.planar == 0 and lp.channels_per_block == 32 and lp.channel_groups == 2
    assert cells(lp, lt)[0]["run"] > 1 and _C.influence_workspace_size(last, lp) <= 32 << 20
    args7, keep7 = _plan_args(shift_plan(g, 7, 7))
    small_view = meta_view((4096, 64, 7, 7), _C.DType.f32)
    small, st = _C.influence_device_plan(small_view, args7)
    assert all(c["tpi"] == 1 and c["ni"] > 1 for c in cells(small, st))  # tiles of many images
    assert small.units * small.channel_groups <= 64 * 64  # a few thousand blocks, not one per image
    assert _C.influence_workspace_size(small_view, small) <= 1 << 20
    with pytest.raises(ValueError, match="does not match the device plan"):
        _C.influence_workspace_size(meta_view((8, 70, 512, 256), _C.DType.bf16), plan)
    with pytest.raises(ValueError, match="does not match the device plan"):
        _C.influence_workspace_size(meta_view((7, 70, 512, 512), _C.DType.bf16), plan)


# ---------------------------------------------------------------- patch Gram (gather)
def emulated_gram(x: torch.Tensor, g: ConvGeometry, pos: torch.Tensor | None, target_blocks: int | None = None) -> torch.Tensor:
    """The symmetric Gram from the emulated device kernels (the launch's block target by default)."""
    ho, wo = g.out_size(x.shape[2], x.shape[3])
    d = x.shape[1] * g.taps
    out = torch.zeros(d, d, dtype=torch.float64)
    geom = _C.PatchGeom(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, ho, wo)
    npos = x.shape[0] * ho * wo if pos is None else int(pos.shape[0])
    extra = {} if target_blocks is None else {"target_blocks": target_blocks}
    _C.gram_gather_emulate_device(view(x), geom, 0 if pos is None else pos.data_ptr(), npos, view(out), **extra)
    upper = torch.triu(out)
    return upper + torch.triu(out, 1).T


GATHER = {  # (shape, dtype, layout, geometry, sample, block target)
    "nchw-fp32-all-positions-groups": ((2, 13, 20, 18), torch.float32, "nchw", (3, 1, 1, 1), None, 2000),
    "last-bf16-sampled": ((3, 8, 17, 15), torch.bfloat16, "channels_last", (3, 2, 1, 2), 0.4, 528),
    "nchw-fp16-5x5-one-group": ((2, 3, 12, 13), torch.float16, "nchw", (5, 1, 2, 1), None, 1),
    "last-fp64-1x1-c130": ((2, 130, 6, 5), torch.float64, "channels_last", (1, 1, 0, 1), 7, 64),
}


@pytest.mark.parametrize("name", list(GATHER))
def test_emulated_patch_gram_matches_float64(name):
    shape, dtype, layout, (k, s, p, d), sample, target = GATHER[name]
    g = ConvGeometry.parse(k, s, p, d)
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=gen) + 30 * torch.rand(shape[1], 1, 1, generator=gen)).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    ho, wo = g.out_size(shape[2], shape[3])
    pos = None if sample is None else sample_positions(0, shape[0], ho * wo, sample, 3)
    ref = patch_gram_reference(x, g, pos)
    got = emulated_gram(x, g, pos, target)
    assert rel_max(got, ref) <= TOL
    assert torch.equal(got, got.T)


def test_gather_plans_split_positions_and_blocks():
    big = _C.gram_gather_workspace_size(meta_view((8, 64, 512, 512), _C.DType.bf16),
                                        _C.PatchGeom(3, 3, 1, 1, 1, 1, 1, 1, 512, 512), 8 * 512 * 512, True)
    pairs = 9 * 10 // 2  # D = 576: nine 64-blocks
    groups = big // (8 * pairs * 64 * 64)
    assert groups * pairs <= 528 < (groups + 1) * pairs and big <= 64 << 20  # about 4 blocks an SM; partials capped
