"""The CUDA influence back-end on a GPU against float64, and against its own CPU emulation.

Collected everywhere, skipped without a CUDA device (conftest). The float64 oracles
(influence_reference: unfold + einsum / matmul) run on the GPU for the large shapes (the unfolded
(8, 630, 512^2) float64 tensor is 10.6 GB). Shapes reach every path of the device plan: cells of
several tiles ((2, 70, 96, 80), (8, 70, 512, 512)), one tile per cell over many images
((4096, 64, 7, 7)), C > 128 (a partial channel group), every input dtype, NCHW and channels_last,
strides / dilations / paddings, outliers of 50-150 sigma on every tile's first position, a
non-default stream right after a producer kernel, and an input on a device other than the
current one. benchmarks/gpu_check.sh runs them (and compute-sanitizer on
test_sanitizer_workload).
"""
from __future__ import annotations

import pytest
import torch

import fastprune
from fastprune._ext import _C
from fastprune._views import view
from fastprune.stats.influence import InfluenceMoments, PatchGram, _JobSums, sample_positions
from fastprune.stats.influence_geometry import ConvGeometry, shift_plan
from fastprune.stats.influence_reference import (
    auto_moments_reference,
    conv_influence_reference,
    patch_gram_reference,
)

from test_influence_device import emulated_gram, outlier_data, rel, rel_max

pytestmark = pytest.mark.gpu
TOL = 1e-5
G3 = ConvGeometry.parse(3, 1, 1, 1)


def moments_cuda(x: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    acc = InfluenceMoments(x.shape[1], (g.kh, g.kw), (g.sh, g.sw), (g.pt, g.pl), (g.dh, g.dw))
    return acc.update(x).moments


def check_moments(x: torch.Tensor, g: ConvGeometry, tol: float = TOL) -> None:
    """x on the GPU: the kernel's moments against the float64 oracle computed on the GPU."""
    got = moments_cuda(x, g)
    want = auto_moments_reference(x, g).cpu()
    err = rel(got, want)
    assert err <= tol, f"auto-moments: relative error {err:.3g} > {tol:g}"


SHAPES = {
    "tiled": (2, 70, 160, 300),        # cells of several 48 x 128 tiles
    "c130": (3, 130, 40, 52),          # C > 128: partial channel groups
    "many-small-maps": (4096, 64, 7, 7),
    "big": (8, 70, 512, 512),
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
GRID = [(s, d, k) for s in ("tiled", "c130", "many-small-maps") for d in DTYPES for k in ("nchw", "channels_last")]
GRID += [("big", torch.bfloat16, "nchw"), ("big", torch.float32, "nchw"), ("big", torch.float16, "channels_last")]


def data(shape, dtype, layout, g=G3, seed=0):
    scale = 1e2 if dtype in (torch.float16, torch.bfloat16) else 1e4
    return outlier_data(SHAPES.get(shape, shape), dtype, layout, g, scale, seed=seed, device="cuda")


@pytest.mark.slow
@pytest.mark.parametrize("shape,dtype,layout", GRID, ids=lambda v: str(v).replace("torch.", ""))
def test_auto_moments_shapes_dtypes_layouts_with_outliers(shape, dtype, layout):
    check_moments(data(shape, dtype, layout), G3)


@pytest.mark.parametrize("k,s,p,d", [(5, 2, 2, 2), (1, 1, 0, 1), (7, 1, 3, 1), (3, 2, 0, 1), (3, 1, 0, 20)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_auto_moments_geometries(k, s, p, d, layout):
    g = ConvGeometry.parse(k, s, p, d)
    check_moments(data((2, 40, 64, 70), torch.float32, layout, g), g)


@pytest.mark.parametrize("k,s,p,d,dtype,last", [
    (3, 1, 1, 1, torch.float32, False),
    (3, 2, 0, 1, torch.float16, True),
    (5, 1, "same", 2, torch.bfloat16, False),
    (1, 1, 0, 1, torch.float32, True),
])
def test_conv_influence_and_patch_gram_match_reference(k, s, p, d, dtype, last):
    x = torch.randn(2, 24, 21, 19).to(dtype)
    if last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(7, 24, k, k)
    xc = x.cuda()
    got = fastprune.conv_influence(xc, w.cuda(), stride=s, padding=p, dilation=d)
    assert rel_max(got, conv_influence_reference(x.float(), w, s, p, d)) <= TOL
    g = ConvGeometry.parse(k, s, p, d)
    gram, count = fastprune.patch_gram(xc, k, stride=s, padding=p, dilation=d)
    assert rel_max(gram, patch_gram_reference(x.float(), g)) <= TOL
    ho, wo = g.out_size(21, 19)
    pos = sample_positions(0, 2, ho * wo, 0.3, 7)
    gram, count = fastprune.patch_gram(xc, k, stride=s, padding=p, dilation=d, sample=0.3, seed=7)
    assert count == pos.shape[0]
    assert rel_max(gram, patch_gram_reference(x.float(), g, pos)) <= TOL


PATCH = [("c130", torch.float32, "nchw", None), ("c130", torch.bfloat16, "channels_last", 0.25),
         ("many-small-maps", torch.float16, "nchw", None), ("many-small-maps", torch.float64, "channels_last", 9),
         ("big", torch.bfloat16, "nchw", None), ("big", torch.float32, "channels_last", 4096)]


@pytest.mark.slow
@pytest.mark.parametrize("shape,dtype,layout,sample", PATCH, ids=lambda v: str(v).replace("torch.", ""))
def test_patch_gram_exact_and_sampled(shape, dtype, layout, sample):
    x = data(shape, dtype, layout)
    n, _, h, w = x.shape
    ho, wo = G3.out_size(h, w)
    gram, count = fastprune.patch_gram(x, 3, padding=1, sample=sample, seed=5)
    pos = None if sample is None else sample_positions(0, n, ho * wo, sample, 5).cuda()
    want = patch_gram_reference(x, G3, pos).cpu()
    assert count == (n * ho * wo if pos is None else pos.shape[0])
    assert rel_max(gram, want) <= TOL


@pytest.mark.parametrize("shape,dtype,layout", [((2, 6, 40, 52), torch.float32, "nchw"),
                                                ((2, 130, 12, 14), torch.bfloat16, "channels_last"),
                                                ((3, 5, 23, 21), torch.float16, "nchw"),
                                                ((2, 9, 19, 17), torch.float64, "channels_last")])
def test_device_agrees_with_its_emulation_bitwise(shape, dtype, layout):
    """Same plan, tiles, lane order, FMAs, trees and merge order: the same bits."""
    x = outlier_data(shape, dtype, layout, G3, 1e2)
    plan = shift_plan(G3, shape[2], shape[3])
    emu = _JobSums(plan, shape[1], torch.device("cpu"))
    _C.influence_emulate_device(view(x), emu._host_args, emu.out)
    dev = _JobSums(plan, shape[1], torch.device("cuda"))
    dev.add(x.cuda())
    assert torch.equal(dev.sums.cpu(), emu.sums)
    d = shape[1] * 9
    out = torch.zeros(d, d, dtype=torch.float64, device="cuda")
    acc = PatchGram(shape[1], 3, padding=1)
    acc._gather(x.cuda(), _C.PatchGeom(3, 3, 1, 1, 1, 1, 1, 1, shape[2], shape[3]), shape[2] * shape[3], out)
    upper = torch.triu(out.cpu())
    assert torch.equal(upper + torch.triu(upper, 1).T, emulated_gram(x, G3, None))


def test_streamed_updates_merge_and_are_deterministic():
    x = data((6, 70, 100, 90), torch.float32, "nchw")
    m = InfluenceMoments(70, 3, padding=1)
    for part in x.split(2):
        m.update(part)
    assert rel(m.moments, auto_moments_reference(x, G3).cpu()) <= TOL
    a, b = moments_cuda(x, G3), moments_cuda(x, G3)
    assert torch.equal(a, b)
    g1, _ = fastprune.patch_gram(x, 3, padding=1)
    g2, _ = fastprune.patch_gram(x, 3, padding=1)
    assert torch.equal(g1, g2)


def test_non_default_stream_right_after_a_producer_kernel():
    x = data((4, 70, 128, 128), torch.float32, "nchw")
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = x * 2.0 + 1.0  # the producer, queued on s; no synchronisation before the kernels
        r = moments_cuda(y, G3)
        gram, _ = fastprune.patch_gram(y, 3, padding=1, sample=500, seed=1)
    torch.cuda.synchronize()
    y = x * 2.0 + 1.0
    assert rel(r, auto_moments_reference(y, G3).cpu()) <= TOL
    pos = sample_positions(0, 4, 128 * 128, 500, 1).cuda()
    assert rel_max(gram, patch_gram_reference(y, G3, pos).cpu()) <= TOL


def test_input_on_a_device_other_than_the_current_one():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    x = data((2, 70, 64, 64), torch.float32, "nchw")
    x1 = x.to("cuda:1")
    with torch.cuda.device(0):
        r = moments_cuda(x1, G3)
        gram, _ = fastprune.patch_gram(x1, 3, padding=1)
        assert torch.cuda.current_device() == 0
    assert rel(r, auto_moments_reference(x, G3).cpu()) <= TOL
    assert rel_max(gram, patch_gram_reference(x, G3).cpu()) <= TOL


def test_workspace_comes_from_torch_and_is_reused():
    x = torch.randn(8, 64, 256, 256, device="cuda")
    m = InfluenceMoments(64, 3, padding=1)
    m.update(x)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(3):
        m.update(x)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # plan table, workspace and sums are kept


def test_cuda_and_cpu_accumulators_merge():
    x = torch.randn(3, 8, 12, 12)
    a = InfluenceMoments(8, 3, padding=1).update(x[:1]).merge(InfluenceMoments(8, 3, padding=1).update(x[1:].cuda()))
    b = InfluenceMoments(8, 3, padding=1).update(x)
    assert rel_max(a.moments, b.moments) <= TOL
    g1 = PatchGram(8, 3, padding=1).update(x.cuda())
    g2 = PatchGram(8, 3, padding=1).update(x)
    assert rel_max(g1.gram, g2.gram) <= TOL


def test_cuda_nonfinite_raises():
    x = torch.randn(1, 4, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        fastprune.conv_influence(x.cuda(), torch.randn(2, 4, 3, 3).cuda())
    acc = PatchGram(4, 3, padding=1)
    with pytest.raises(ValueError, match="1 non-finite"):
        acc.update(x.cuda())
    assert acc.count == 0 and not acc.gram.any()


def test_sanitizer_workload():
    """Small shapes over every influence kernel, dtype and layout, for compute-sanitizer (gpu_check.sh)."""
    for shape, dtype, layout, (k, s, p, d) in [((2, 6, 40, 52), torch.float32, "nchw", (3, 1, 1, 1)),
                                               ((2, 130, 12, 14), torch.bfloat16, "channels_last", (3, 1, 1, 1)),
                                               ((3, 5, 23, 21), torch.float16, "nchw", (5, 2, 2, 2)),
                                               ((2, 9, 19, 17), torch.float64, "channels_last", (7, 1, 3, 1))]:
        g = ConvGeometry.parse(k, s, p, d)
        x = outlier_data(shape, dtype, layout, g, 1e2).cuda()
        check_moments(x, g)
        gram, _ = fastprune.patch_gram(x, k, stride=s, padding=p, dilation=d)
        assert rel_max(gram, patch_gram_reference(x, g).cpu()) <= TOL
        gram, _ = fastprune.patch_gram(x, k, stride=s, padding=p, dilation=d, sample=0.5, seed=2)
        ho, wo = g.out_size(shape[2], shape[3])
        pos = sample_positions(0, shape[0], ho * wo, 0.5, 2).cuda()
        assert rel_max(gram, patch_gram_reference(x, g, pos).cpu()) <= TOL
