"""ChannelMoments against the float64 reference (fastprune/stats/reference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastprune
from fastprune import ChannelMoments, channel_moments
from fastprune._ext import _C
from fastprune.stats.reference import reference_moments

STATS = ["count", "mean", "var", "std", "abs_mean", "zero_fraction", "min", "max", "cov", "corr"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error, Frobenius for matrices."""
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def assert_matches(m: ChannelMoments, x: torch.Tensor, tol: float = 1e-5, stats=None) -> None:
    ref = reference_moments(x)
    stats = stats or (STATS if m.covariance else STATS[:-2]) + (["msd"] if x.dim() == 4 else [])
    for k in stats:
        err = rel(getattr(m, k), ref[k])
        assert err <= tol, f"{k}: relative error {err:.3g} > {tol:g}"


def feature_maps(n=3, c=21, h=23, w=29, dtype=torch.float32, seed=0) -> torch.Tensor:
    """Post-ReLU-like maps with correlated channels and varied scales."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, h, w, generator=g)
    mix = torch.randn(c, c, generator=g) / c**0.5 + torch.eye(c)
    x = torch.einsum("dc,nchw->ndhw", mix, base) * torch.linspace(0.5, 3, c).view(1, c, 1, 1) + 0.3
    return x.relu().to(dtype)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("covariance", [True, False])
def test_fp32_maps_match_reference(isa, layout, covariance):
    x = feature_maps()
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    m = channel_moments(x, covariance=covariance)
    assert_matches(m, x)
    assert m.count.dtype == torch.float64 and m.count.shape == (21,)


@pytest.mark.parametrize("rows_contiguous", [True, False])
def test_matrix_input_matches_reference(isa, rows_contiguous):
    x = torch.randn(3000, 37) * 2 + torch.arange(37.0)
    if not rows_contiguous:
        x = x.t().contiguous().t()
    assert_matches(channel_moments(x), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_low_precision_matches_reference_of_upcast_values(isa, dtype, layout):
    x = feature_maps(c=19, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    assert_matches(channel_moments(x), x)  # the reference upcasts the same stored values


def test_channel_with_mean_1e4_times_std(isa):
    x = feature_maps(n=4, c=6, h=64, w=64)
    x[:, 2] = 1e4 + torch.randn(4, 64, 64)       # mean = 1e4 x std
    x[:, 4] = -3e4 * 0.5 + 1.5 * torch.randn(4, 64, 64)
    m = ChannelMoments(6)
    for part in x.split(1):
        m.update(part)
    assert_matches(m, x)
    ref = reference_moments(x)
    for c in (2, 4):
        assert abs(m.var[c] / ref["var"][c] - 1) <= 1e-5


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "rows"])
@pytest.mark.parametrize("offset, scale, tol", [
    (1e8, 1.0, 1e-7),    # mean 3.5e8 x std: float32 would lose everything (var 0.0 before); 1e-7 is
                         # float64's condition bound eps * |mean| / std for a one-pass merge of means
    (0.0, 1e20, 1e-12),  # squares ~1e40 overflow float32 (var inf before), fine in float64
])
def test_float64_input_is_accumulated_in_float64(isa, layout, offset, scale, tol):
    g = torch.Generator().manual_seed(3)
    x = offset + scale * torch.rand(5, 7, 13, 17, dtype=torch.float64, generator=g)
    x[:, 3] = offset - 2 * scale * torch.rand(5, 13, 17, dtype=torch.float64, generator=g) ** 2
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "rows":
        x = x.permute(0, 2, 3, 1).reshape(-1, 7)
    m = ChannelMoments(7)
    for part in x.split(2):  # merged over updates and over the kernel's tiles and threads
        m.update(part)
    ref = reference_moments(x)
    for k in ("mean", "var", "cov", "min", "max", "abs_mean") + (("msd",) if x.dim() == 4 else ()):
        err = rel(getattr(m, k), ref[k])
        assert err <= tol, f"{k}: relative error {err:.3g} > {tol:g}"


def test_issue_reproduction_float64_offsets(isa):
    g = torch.Generator().manual_seed(0)
    for offset in (1e7, 1e8):
        x = offset + torch.rand(4, 3, 5, 5, dtype=torch.float64, generator=g)
        want = x.transpose(0, 1).reshape(3, -1).var(1)
        assert rel(channel_moments(x).var, want) <= 1e-7


@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e20), (torch.float64, 1e160)])
def test_finite_overflow_is_refused_naming_channels(isa, dtype, big):
    m = ChannelMoments(3)
    m.update(torch.rand(2, 3, 4, 4, dtype=dtype))
    before = m.state_dict()
    x = torch.rand(2, 3, 4, 4, dtype=dtype)
    x[:, 1] *= big
    with pytest.raises(fastprune.stats.moments.NonFiniteInput, match=r"overflow .* channel\(s\) 1 ") as err:
        m.update(x)
    assert err.value.overflow
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.slow
def test_stream_of_1e8_samples_in_many_updates():
    # Every update holds the same multiset of values in a different order (a roll), so the exact
    # statistics of the whole stream are those of one batch: reference of one batch is the oracle.
    C, M = 3, 1 << 22
    g = torch.Generator().manual_seed(1)
    base = torch.randn(M, C, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    base[:, 0] += 1e4                     # mean = 1e4 x std
    base[:, 1] = base[:, 1].relu()
    base[:, 2] += 0.3 * base[:, 0]
    updates = 24                          # 24 x 2^22 = 1.007e8 samples
    m = ChannelMoments(C)
    for i in range(updates):
        m.update(torch.roll(base, shifts=i * 7919, dims=0))
    assert m.count[0] >= 1e8
    ref = reference_moments(base)
    n1, N = M - 1, updates * M - 1        # m2 of the stream = updates x m2 of one batch
    assert rel(m.mean, ref["mean"]) <= 1e-5
    assert rel(m.var, ref["var"] * n1 * updates / N) <= 1e-5
    assert rel(m.cov, ref["cov"] * n1 * updates / N) <= 1e-5
    for k in ("abs_mean", "zero_fraction", "min", "max", "corr"):
        assert rel(getattr(m, k), ref[k]) <= 1e-5, k


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 40), h=st.integers(1, 40), w=st.integers(1, 40),
       cut=st.floats(0, 1), channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_merge_of_any_split_equals_whole(n, c, h, w, cut, channels_last, seed):
    x = feature_maps(n, c, h, w, seed=seed)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    k = int(round(cut * n))
    whole = channel_moments(x)
    a, b = ChannelMoments(c), ChannelMoments(c)
    if k > 0:
        a.update(x[:k])
    if k < n:
        b.update(x[k:])
    merged = a.merge(b)
    for s in STATS + ["msd"]:
        u, v = getattr(merged, s), getattr(whole, s)
        if s in ("var", "std", "cov", "corr") and n * h * w < 2:
            assert torch.isnan(u).all() and torch.isnan(v).all()
            continue
        if s == "corr":   # constant channels give NaN rows in both
            ok = ~torch.isnan(v)
            u, v = u[ok], v[ok]
        if s == "msd" and h * w < 2:
            continue
        assert rel(u, v) <= 2e-6, s
    checked = ["count", "mean", "min", "max", "zero_fraction"] + (["var"] if n * h * w > 1 else [])
    assert_matches(merged, x, stats=checked)


def test_merge_is_exact_chan_rule_on_states():
    x = feature_maps(n=4)
    parts = [channel_moments(p) for p in x.split([1, 2, 1])]
    merged = ChannelMoments(21)
    for p in parts:
        merged.merge(ChannelMoments.from_state_dict(p.state_dict()))
    # the same merge in another order: float64 rounding only
    other = ChannelMoments(21).merge(parts[2]).merge(parts[0]).merge(parts[1])
    assert rel(merged.cov, other.cov) <= 1e-12 and rel(merged.mean, other.mean) <= 1e-12
    assert_matches(merged, x)


@pytest.mark.parametrize("covariance", [True, False])
def test_in_place_state_never_aliases_a_merged_part_or_itself(covariance):
    # the state is updated in place and the kernel's output buffer is reused between batches:
    # a part merged in stays unchanged, a later update of either side does not leak into the
    # other, and merging an accumulator into itself counts its data twice
    x = feature_maps(n=4)
    part = ChannelMoments(21, covariance=covariance).update(x[:2])
    before = part.state_dict()
    whole = ChannelMoments(21, covariance=covariance).merge(part)  # empty: copied in
    whole.update(x[2:])
    assert all(torch.equal(before[k], v) for k, v in part.state_dict().items())
    assert_matches(whole, x)
    part.update(x[2:])
    assert_matches(whole, x)
    twice = ChannelMoments(21, covariance=covariance).update(x[:2]).update(x[2:])
    twice.merge(twice)
    assert_matches(twice, torch.cat([x, x]))


def test_wide_covariance_merged_in_row_blocks_matches_reference():
    # C = 200: the co-moment merge runs in row blocks (163 + 37 rows), batch by batch
    x = feature_maps(n=3, c=200, h=9, w=11)
    m = ChannelMoments(200)
    for part in x.split(1):
        m.update(part)
    assert_matches(m, x)
    assert torch.equal(m.cov, m.cov.T)


def test_wide_nchw_covariance_over_column_panels_and_pipelined_tiles(isa):
    # C = 260: the Gram's blocks run in three column panels; 1600-pixel images: two tiles each,
    # the next one packed during the current one's Gram, across the image boundary too
    x = feature_maps(n=3, c=260, h=40, w=40, seed=3)
    assert_matches(channel_moments(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nchw_statistics_walked_channel_by_channel_over_cut_images(isa, dtype):
    # statistics only, NCHW: an image's samples are walked channel by channel in 2048-sample
    # tiles; 300 x 301 pixels = 44 tiles and a tail of odd length; with two threads the range
    # boundary cuts the middle image (its msd is joined from two segments)
    x = feature_maps(n=3, c=8, h=300, w=301, dtype=dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = channel_moments(x, covariance=False)
    finally:
        torch.set_num_threads(threads)
    assert_matches(m, x)


def check_covariance(c: int, h: int, w: int, layout: str) -> None:
    """Moments and covariance of two c-channel h x w maps in `layout` against float64."""
    x = feature_maps(n=2, c=c, h=h, w=w, seed=c)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    m = channel_moments(x)
    assert_matches(m, x)
    assert torch.equal(m.cov, m.cov.T)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_covariance_for_every_channel_count_up_to_two_block_widths(isa, layout):
    # the Gram runs in strips of RI rows from the diagonal, in blocks of up to RJ columns (AVX-512
    # 5 x 5, AVX2 3 x 4, SSE 3 x 3): C = 1..27 reaches every remainder strip and block width
    for c in range(1, 28):
        check_covariance(c, 9, 13, layout)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("c", [28, 33, 44, 47, 63, 65, 129, 250, 256])
def test_covariance_for_wider_channel_counts_over_partial_tiles(isa, layout, c):
    # channel counts past the 27 above (further strip and block remainders; from C = 129 on, two
    # or more column panels of the Gram on any machine, earlier where the L2 is smaller than
    # 1 MiB: a panel holds half of it) over 26 x 50 images: a full 1024-sample tile and one of
    # 276 samples (a zero-padded last vector), the next tile packed during the current Gram
    check_covariance(c, 26, 50, layout)


def test_bitwise_reproducible_for_same_input(isa):
    x = feature_maps(n=5, c=33, h=64, w=64)
    xs = [x, x.to(memory_format=torch.channels_last), x[:, :, 0, 0].contiguous()]
    for t in xs:
        a, b = channel_moments(t).state_dict(), channel_moments(t).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]) or (torch.isnan(a[k]).all() and torch.isnan(b[k]).all()), k


def test_numpy_input_via_dlpack():
    x = feature_maps(n=2, c=7)
    m = channel_moments(x.numpy())
    assert_matches(m, x)


def test_other_strides_are_copied_and_correct():
    x = feature_maps(n=4, c=10, h=20, w=30)
    for t in (x[:, :, ::2, 1:], x.permute(0, 1, 3, 2), x[::2, 1::2]):
        assert_matches(channel_moments(t), t)


def test_bad_dtypes_raise_type_error():
    for bad in (torch.ones(2, 3, 4, 4, dtype=torch.int32), torch.ones(2, 3, dtype=torch.complex64),
                np.ones((2, 3), dtype=np.int64)):
        with pytest.raises(TypeError, match="dtype"):
            ChannelMoments(3).update(bad)


def test_wrong_rank_and_channel_count_raise_value_error():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C\)"):
        ChannelMoments(3).update(torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C\)"):
        channel_moments(torch.ones(7))
    with pytest.raises(ValueError, match="5 channels.*accumulates 3"):
        ChannelMoments(3).update(torch.ones(2, 5, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        ChannelMoments(0)


@pytest.mark.skipif(fastprune.cuda_available(), reason="a CUDA device is present")
def test_cuda_input_without_cuda_build_or_device_raises():
    x = torch.ones(2, 3)
    v = _C.View(x.data_ptr(), _C.DType.f32, [2, 3], [3, 1], _C.Device.cuda, 0, 0)
    out = torch.empty(_C.moments_out_size(3, True), dtype=torch.float64)
    why = "no CUDA device is visible" if _C.cuda_built() else "no CUDA back-end"
    with pytest.raises(ValueError, match=why):
        _C.moments_update(v, out.data_ptr(), out.numel(), True)


def test_nonfinite_raises_naming_count_and_leaves_state_unchanged():
    x = feature_maps(n=2, c=5)
    m = channel_moments(x)
    before = m.state_dict()
    y = x.clone()
    y[0, 1, 3, 4] = float("nan")
    y[1, 3, 0, 0] = float("inf")
    y[1, 3, 2, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"3 non-finite values.*channel\(s\) 1, 3"):
        m.update(y)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("rank", [2, 4])
def test_allow_nonfinite_drops_samples_and_counts_values(isa, rank):
    x = feature_maps(n=3, c=5)
    x[0, 1, 3, 4] = float("nan")
    x[2, 3, 0, :] = float("inf")
    x[2, 2, 0, 0] = float("nan")
    if rank == 2:
        x = x.permute(0, 2, 3, 1).reshape(-1, 5)
    m = ChannelMoments(5).update(x, allow_nonfinite=True)
    assert m.nonfinite.tolist() == [0, 1, 1, x.shape[-1] if rank == 4 else 29, 0]
    assert m.count[0] == 3 * 23 * 29 - 1 - 29
    assert_matches(m, x)


def test_state_dict_round_trip_and_validation():
    x = feature_maps(n=2, c=4)
    m = channel_moments(x)
    d = m.state_dict()
    assert all(v.dtype in (torch.float64, torch.int64) for v in d.values())
    r = ChannelMoments.from_state_dict(d)
    for k in STATS + ["msd"]:
        assert torch.equal(getattr(r, k), getattr(m, k))
    bad = dict(d, mean=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="'mean' has shape"):
        ChannelMoments.from_state_dict(bad)
    with pytest.raises(ValueError, match="missing keys"):
        ChannelMoments.from_state_dict({k: v for k, v in d.items() if k != "m2"})
    with pytest.raises(ValueError, match="must be a torch.int64"):
        ChannelMoments.from_state_dict(dict(d, count=torch.tensor(3.0, dtype=torch.float64)))
    with pytest.raises(ValueError, match="negative"):
        ChannelMoments.from_state_dict(dict(d, count=torch.tensor(-1)))


def test_readouts_explain_what_is_undefined():
    m = channel_moments(torch.randn(100, 3), covariance=False)
    with pytest.raises(ValueError, match="msd is defined only after"):
        m.msd
    with pytest.raises(ValueError, match="covariance=False"):
        m.cov
    with pytest.raises(ValueError, match="cannot merge"):
        m.merge(ChannelMoments(3))
    e = ChannelMoments(3)
    assert torch.isnan(e.mean).all() and e.count[0] == 0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "matrix"])
def test_cuda_matches_reference(dtype, layout):
    x = feature_maps(n=4, c=70, h=40, w=50, dtype=dtype)
    x[:, 5] = (1e4 + torch.randn(4, 40, 50)).to(dtype) if dtype == torch.float32 else x[:, 5]
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    if layout == "matrix":
        x = x[:, :, 0, :].permute(0, 2, 1).reshape(-1, 70)
    m = ChannelMoments(70)
    for part in x.cuda().split(1):
        m.update(part)
    assert_matches(m, x)
    a, b = channel_moments(x.cuda()).state_dict(), channel_moments(x.cuda()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic second-pass reduction


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 24), h=st.integers(2, 24), w=st.integers(2, 24),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
       view_kind=st.sampled_from(["nchw", "channels_last", "sliced", "transposed_hw", "matrix_t"]),
       seed=st.integers(0, 2**16))
def test_any_dtype_and_strides_match_reference(n, c, h, w, dtype, view_kind, seed):
    x = feature_maps(n, c, h + 1, w + 1, dtype=dtype, seed=seed)
    if view_kind == "nchw":
        x = x[:, :, :h, :w].contiguous()
    elif view_kind == "channels_last":
        x = x[:, :, :h, :w].to(memory_format=torch.channels_last)
    elif view_kind == "sliced":
        x = x[:, :, 1:, :w]
    elif view_kind == "transposed_hw":
        x = x.transpose(2, 3)
    else:
        x = x[:, :, 0, :].permute(0, 2, 1).reshape(-1, c).t().contiguous().t()
    m = channel_moments(x)
    ref = reference_moments(x)
    for k in ["count", "mean", "var", "abs_mean", "zero_fraction", "min", "max", "cov"] + (
            ["msd"] if x.dim() == 4 else []):
        assert rel(getattr(m, k), ref[k]) <= 1e-5, k
