"""The CPU kernels' scratch cache (csrc/include/fastprune/scratch.h): blocks kept between calls
are handed out again without being zeroed, so every kernel must write what it reads. With the
cache's poison switch on, every block comes filled with NaN bytes; a kernel that read scratch it
had not written would then differ from its own unpoisoned result (bitwise) and from the float64
references."""
from __future__ import annotations

import pytest
import torch

from fastprune import ChannelMoments
from fastprune._ext import _C
from fastprune.stats.influence import InfluenceMoments
from fastprune.stats.influence_reference import conv_influence_reference
from fastprune.stats.reference import reference_moments


@pytest.fixture
def poisoned():
    _C.scratch_poison(True)
    yield
    _C.scratch_poison(False)


def maps(n, c, h, w, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g) / c**0.5 + torch.eye(c)
    x = torch.einsum("dc,nchw->ndhw", mix, torch.randn(n, c, h, w, generator=g)) + 0.5
    return x.relu().to(dtype)


# (N, C, H, W): one partial tile; several tiles and images (and two threads' ranges); channel
# counts off every block width; wide enough for several column panels; fp64's own tiles
CASES = [(1, 1, 5, 7), (2, 7, 33, 35), (3, 33, 40, 41), (1, 130, 30, 31), (2, 300, 24, 20), (1, 520, 33, 32)]


def moments_state(x: torch.Tensor, covariance: bool) -> dict:
    m = ChannelMoments(x.shape[1], covariance=covariance)
    for part in x.split(1):  # each image a batch: the cache is reused from the second on
        m.update(part)
    m.update(x)
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("covariance", [True, False])
def test_moments_never_read_unwritten_scratch(isa, shape, layout, dtype, covariance):
    x = maps(*shape, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    clean = moments_state(x, covariance)
    _C.scratch_poison(True)
    try:
        dirty = moments_state(x, covariance)
    finally:
        _C.scratch_poison(False)
    for k in clean:
        assert torch.equal(clean[k], dirty[k]), k
    # and the result is right (the reference of the stream: every image twice)
    ref = reference_moments(torch.cat([x, x]).to(torch.float64))
    m = ChannelMoments.from_state_dict(dirty)
    tol = 1e-5 if dtype != torch.float16 else 2e-5
    for k in (["cov"] if covariance else []) + ["mean", "var", "min", "max"]:
        got, want = getattr(m, k), ref[k]
        assert float((got - want).norm() / want.norm().clamp_min(1e-300)) <= tol, k


@pytest.mark.parametrize("shape", [(1, 3, 9, 11), (2, 20, 70, 64), (1, 70, 40, 36)])
@pytest.mark.parametrize("k,d", [(3, 1), (5, 2)])
def test_influence_never_reads_unwritten_scratch(isa, poisoned, shape, k, d):
    x = maps(*shape)
    w = torch.randn(4, shape[1], k, k, dtype=torch.float64)
    acc = InfluenceMoments(shape[1], kernel_size=k, padding=d * (k - 1) // 2, dilation=d)
    acc.update(x).update(x)  # the second update takes the first one's kept blocks
    got = acc.influence(w)
    want = 2 * conv_influence_reference(x.double(), w, 1, d * (k - 1) // 2, d)
    assert torch.isfinite(got).all()
    assert float(((got - want).abs() / want.abs()).max()) <= 1e-5


def test_a_stream_of_batches_reuses_the_kept_blocks():
    x = maps(1, 520, 16, 16)
    m = ChannelMoments(520)
    m.update(x)
    held = _C.scratch_held()
    assert held >= 520 * 520 * 8  # this thread's fp64 totals came back to its cache
    for _ in range(4):
        m.update(x)
        assert _C.scratch_held() == held  # taken and given back, nothing new kept


def test_the_cache_keeps_at_most_its_limit():
    for c in (600, 700, 800, 900, 1000, 1100):  # fp64 totals of 2.9 .. 9.7 MB each, 36 MB in all
        ChannelMoments(c).update(torch.rand(1, c, 4, 4))
        assert _C.scratch_held() <= 32 << 20

