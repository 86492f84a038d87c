"""The CUDA moments back-end on a GPU against float64, and against its own CPU emulation.

Collected everywhere, skipped without a CUDA device (conftest). Shapes reach every path of the
device plan: several splits per image with splits of several tiles and Gram groups of several
splits ((8, 70, 512, 512)), several images per split with scalar loads ((4096, 64, 7, 7)),
C > 128 (a partial third 64-block), every input dtype, NCHW / channels_last / (N, C) rows and
columns, outliers at split starts, a non-default stream right after a producer kernel, and an
input on a device other than the current one. benchmarks/gpu_check.sh runs them (and
compute-sanitizer on test_sanitizer_workload).
"""
from __future__ import annotations

import pytest
import torch

from fastprune import ChannelMoments, channel_moments
from fastprune.stats.reference import reference_moments

from test_moments_device import CASES, emulated, outlier_data, rel

pytestmark = pytest.mark.gpu
TOL = 1e-5
STATS = ["count", "mean", "var", "abs_mean", "zero_fraction", "min", "max", "cov", "corr"]


def check(m: ChannelMoments, x: torch.Tensor, tol: float = TOL) -> None:
    ref = reference_moments(x)
    names = STATS[:-2] if not m.covariance else STATS
    names = names + (["msd"] if x.dim() == 4 else [])
    for k in names:
        err = rel(getattr(m, k), ref[k])
        assert err <= tol, f"{k}: relative error {err:.3g} > {tol:g}"
    if m.covariance:
        assert float(m.corr.abs().max()) <= 1.0


SHAPES = {
    "big": (8, 70, 512, 512),
    "many-small-maps": (4096, 64, 7, 7),
    "c130": (3, 130, 96, 80),
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# every dtype and layout on the two smaller shapes; the big one (a float64 reference of 147M
# values per case) in the dtypes the kernels treat differently: 3xTF32 and 3xBF16, both layouts
GRID = [(s, d, k) for s in ("many-small-maps", "c130") for d in DTYPES for k in ("nchw", "channels_last")]
GRID += [("big", torch.bfloat16, "nchw"), ("big", torch.float32, "nchw"), ("big", torch.float16, "channels_last")]


@pytest.mark.slow
@pytest.mark.parametrize("shape,dtype,kind", GRID, ids=lambda v: str(v).replace("torch.", ""))
def test_shapes_dtypes_layouts_with_outliers(shape, dtype, kind):
    scale = 1e2 if dtype in (torch.float16, torch.bfloat16) else 1e4
    x, _ = outlier_data(SHAPES[shape], dtype, kind, scale)
    xc = x.cuda()
    for cov in (True, False):
        check(channel_moments(xc, covariance=cov), x)


@pytest.mark.parametrize("kind", ["rows", "columns"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matrix_input(kind, dtype):
    x, _ = outlier_data((300_000, 40), dtype, "columns" if kind == "columns" else "nchw", 1e2)
    check(channel_moments(x.cuda()), x)


@pytest.mark.parametrize("case", ["nchw-fp32-within", "last-bf16-c130", "nchw-bf16-vector", "matrix-fp32-columns"])
def test_device_agrees_with_its_emulation(case):
    """Same plan, shifts and operand rounding: only the order of the sums inside an MMA differs."""
    shape, dtype, kind, scale, _ = CASES[case]
    x, _ = outlier_data(shape, dtype, kind, scale)
    m_dev, m_emu = channel_moments(x.cuda()), emulated(x)
    for k in ("mean", "var", "cov", "min", "max") + (("msd",) if x.dim() == 4 else ()):
        assert rel(getattr(m_dev, k), getattr(m_emu, k)) <= 1e-6, k


def test_streamed_updates_merge_and_are_deterministic():
    x, _ = outlier_data((6, 70, 100, 90), torch.float32, "nchw", 1e3)
    m = ChannelMoments(70)
    for part in x.cuda().split(2):
        m.update(part)
    check(m, x)
    a, b = channel_moments(x.cuda()).state_dict(), channel_moments(x.cuda()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_default_stream_right_after_a_producer_kernel():
    x, _ = outlier_data((4, 70, 128, 128), torch.float32, "nchw", 1e3)
    src = x.cuda()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = src * 2.0 + 1.0  # the producer, queued on s; no synchronisation before the moments
        m = channel_moments(y)
        cov = m.cov
    check(m, x * 2.0 + 1.0)
    assert cov.shape == (70, 70)


def test_input_on_a_device_other_than_the_current_one():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    x, _ = outlier_data((2, 70, 64, 64), torch.float32, "nchw", 1e3)
    with torch.cuda.device(0):
        m = channel_moments(x.to("cuda:1"))
        assert torch.cuda.current_device() == 0
    check(m, x)


def test_workspace_comes_from_torch_and_is_reused():
    x = torch.randn(8, 64, 256, 256, device="cuda")
    m = ChannelMoments(64)
    m.update(x)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(3):
        m.update(x)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # the workspace is kept, not re-allocated


def test_sanitizer_workload():
    """Small shapes over every kernel and path, for compute-sanitizer (gpu_check.sh)."""
    for shape, dtype, kind in [((2, 70, 48, 64), torch.float32, "nchw"),
                               ((3, 130, 40, 52), torch.bfloat16, "channels_last"),
                               ((300, 20, 6, 7), torch.float16, "nchw"),
                               ((5000, 33), torch.float64, "nchw")]:
        x, _ = outlier_data(shape, dtype, kind, 1e2)
        for cov in (True, False):
            check(channel_moments(x.cuda(), covariance=cov), x)
