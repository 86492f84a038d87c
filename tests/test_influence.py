"""Shifted-moment influence and patch Gram against float64 explicit convolutions and unfold."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastprune
from fastprune.criteria.nci import weight_influence as nci_w
from fastprune.stats.influence import InfluenceMoments, PatchGram, sample_positions
from fastprune.stats.influence_geometry import ConvGeometry
from fastprune.stats.influence_reference import (
    auto_moments_reference,
    conv_influence_reference,
    nci_w_reference,
    patch_gram_reference,
)

TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (entries of a Gram can be ~0; its scale is its largest entry)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def elementwise_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


GRID = [
    (k, s, d, p, depthwise)
    for k, s, d, p, depthwise in itertools.product([1, 3, 5, 7], [1, 2], [1, 2], [0, "same"], [False, True])
    if not (p == "same" and s != 1)
]


@pytest.mark.parametrize("k,s,d,p,depthwise", GRID)
def test_nci_matches_explicit_convolutions(k, s, d, p, depthwise):
    c = 6
    x = torch.randn(2, c, 17, 15) + 0.5
    groups = c if depthwise else 1
    w = torch.randn(2 * c if depthwise else 5, c // groups, k, k)
    got = fastprune.conv_influence(x, w, stride=s, padding=p, dilation=d, groups=groups)
    want = conv_influence_reference(x, w, s, p, d, groups)
    assert got.dtype == torch.float64 and got.shape == (c,)
    assert elementwise_rel(got, want) <= TOL


@pytest.mark.parametrize("k,s,d,p", [(k, s, d, p) for k, s, d, p, dw in GRID if not dw])
def test_patch_gram_matches_unfold(k, s, d, p):
    x = torch.randn(2, 3, 16, 14)
    g = ConvGeometry.parse(k, s, p, d)
    gram, count = fastprune.patch_gram(x, k, stride=s, padding=p, dilation=d)
    ho, wo = g.out_size(16, 14)
    assert count == 2 * ho * wo
    assert gram.shape == (3 * k * k, 3 * k * k) and gram.dtype == torch.float64
    assert rel_err(gram, patch_gram_reference(x, g)) <= TOL
    assert torch.equal(gram, gram.T)


@pytest.mark.parametrize("path", ["shift", "gather"])
def test_patch_gram_paths_agree_with_unfold(monkeypatch, path):
    if path == "gather":
        monkeypatch.setenv("FASTPRUNE_PATCH_GRAM", "gather")
    g = ConvGeometry.parse(3, 1, 1, 1)
    for c in (20, 37):  # C not a multiple of the SIMD width; an odd number of channel blocks
        x = torch.randn(3, c, 12, 13)
        gram, _ = fastprune.patch_gram(x, 3, padding=1)
        assert rel_err(gram, patch_gram_reference(x, g)) <= TOL


def test_auto_moments_match_unfold():
    x = torch.randn(2, 5, 11, 9)
    acc = InfluenceMoments(5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)).update(x)
    want = auto_moments_reference(x, acc.geometry)
    assert rel_err(acc.moments, want) <= TOL


def test_streamed_sizes_reads_and_merges_match_unfold():
    # batches of several sizes (one pending job-sum buffer each), moments read between updates
    # (a fold, then accumulation goes on), a merge while both sides hold unfolded sums
    g = ConvGeometry.parse(3, 1, 1, 1)
    xs = [torch.randn(2, 5, 11, 9), torch.randn(1, 5, 7, 12), torch.randn(3, 5, 11, 9).to(memory_format=torch.channels_last)]
    want = sum(auto_moments_reference(x, g) for x in xs)
    acc = InfluenceMoments(5, 3, padding=1).update(xs[0]).update(xs[1])
    mid = acc.moments.clone()
    assert rel_err(mid, auto_moments_reference(xs[0], g) + auto_moments_reference(xs[1], g)) <= TOL
    acc.update(xs[2])
    assert rel_err(acc.moments, want) <= TOL and acc.images == 6
    a = InfluenceMoments(5, 3, padding=1).update(xs[0]).update(xs[2])
    b = InfluenceMoments(5, 3, padding=1).update(xs[1])
    assert rel_err(a.merge(b).moments, want) <= TOL and a.images == 6
    assert torch.equal(InfluenceMoments.from_state_dict(a.state_dict()).moments, a.moments)
    # many input sizes: the unfolded job sums stay bounded and nothing is lost
    sizes = [torch.randn(1, 5, 6 + k, 7) for k in range(12)]
    many = InfluenceMoments(5, 3, padding=1)
    for x in sizes:
        many.update(x)
        assert len(many._pending) <= 8
    assert rel_err(many.moments, sum(auto_moments_reference(x, g) for x in sizes)) <= TOL


def test_sampled_patch_gram_uses_the_seeded_positions():
    x = torch.randn(3, 4, 10, 12)
    g = ConvGeometry.parse(3, 1, 1, 1)
    gram, count = fastprune.patch_gram(x, 3, padding=1, sample=17, seed=3)
    pos = sample_positions(0, 3, 120, 17, 3)
    assert count == 51 == pos.shape[0]
    assert rel_err(gram, patch_gram_reference(x, g, pos)) <= TOL
    again, _ = fastprune.patch_gram(x, 3, padding=1, sample=17, seed=3)
    assert torch.equal(gram, again)
    other, _ = fastprune.patch_gram(x, 3, padding=1, sample=17, seed=4)
    assert not torch.equal(gram, other)
    _, count = fastprune.patch_gram(x, 3, padding=1, sample=0.25, seed=3)
    assert count == 3 * 30


def test_sampled_positions_continue_across_batches():
    x = torch.randn(4, 2, 8, 8)
    one = PatchGram(2, 3, padding=1, sample=9, seed=1).update(x)
    two = PatchGram(2, 3, padding=1, sample=9, seed=1).update(x[:1]).update(x[1:])
    assert one.count == two.count == 36
    assert rel_err(two.gram, one.gram) <= TOL


def test_nci_w_matches_reference_and_definition():
    w = torch.randn(8, 3, 3, 3)
    assert torch.allclose(nci_w(w), w.double().abs().sum(dim=(0, 2, 3)))
    wd = torch.randn(12, 1, 3, 3)  # depthwise, 2 outputs per channel
    got = nci_w(wd, groups=6)
    assert torch.allclose(got, nci_w_reference(wd, 6))
    assert torch.allclose(got, wd.double().abs().reshape(6, 2, 9).sum(dim=(1, 2)))


def test_consumers_sum():
    x = torch.randn(2, 4, 12, 12)
    w1, w2 = torch.randn(3, 4, 3, 3), torch.randn(5, 4, 1, 1)
    a = InfluenceMoments(4, 3, padding=1).update(x).influence(w1)
    b = InfluenceMoments(4, 1).update(x).influence(w2)
    want = conv_influence_reference(x, w1, 1, 1) + conv_influence_reference(x, w2, 1, 0)
    assert elementwise_rel(a + b, want) <= TOL


def test_batches_merge_and_state_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    x = torch.randn(5, 6, 9, 10)
    w = torch.randn(4, 6, 3, 3)
    whole = InfluenceMoments(6, 3, padding=1).update(x)
    a = InfluenceMoments(6, 3, padding=1).update(x[:2])
    b = InfluenceMoments(6, 3, padding=1).update(x[2:])
    a.merge(b)
    assert a.images == 5
    assert rel_err(a.influence(w), whole.influence(w)) <= TOL
    save_file(a.state_dict(), tmp_path / "m.safetensors")
    back = InfluenceMoments.from_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(back.moments, a.moments) and back.images == 5 and back.geometry == a.geometry

    pg = PatchGram(6, 3, padding=1).update(x[:2]).merge(PatchGram(6, 3, padding=1).update(x[2:]))
    assert pg.count == 5 * 90
    assert rel_err(pg.gram, PatchGram(6, 3, padding=1).update(x).gram) <= TOL
    save_file(pg.state_dict(), tmp_path / "g.safetensors")
    back = PatchGram.from_state_dict(load_file(tmp_path / "g.safetensors"))
    assert torch.equal(back.gram, pg.gram) and back.count == pg.count and back.sample is None


def test_state_dict_validation():
    st_ = InfluenceMoments(3, 3).state_dict()
    bad = dict(st_, moments=st_["moments"].float())
    with pytest.raises(ValueError, match="moments"):
        InfluenceMoments.from_state_dict(bad)
    with pytest.raises(ValueError, match="keys"):
        InfluenceMoments.from_state_dict({"moments": st_["moments"]})
    bad = dict(st_, geometry=torch.tensor([3, 3, 3, 0, 1, 1, 1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="geometry"):
        InfluenceMoments.from_state_dict(bad)
    g = PatchGram(2, 3, sample=5).state_dict()
    with pytest.raises(ValueError, match="symmetric"):
        PatchGram.from_state_dict(dict(g, gram=torch.triu(torch.ones(18, 18, dtype=torch.float64))))
    assert PatchGram.from_state_dict(g).sample == 5
    with pytest.raises(ValueError, match="sample"):
        PatchGram.from_state_dict(dict(g, sample=torch.tensor([5.0, 7.0], dtype=torch.float64)))


def test_merge_rejects_other_geometry():
    with pytest.raises(ValueError, match="merge"):
        InfluenceMoments(3, 3).merge(InfluenceMoments(3, 3, stride=2))
    with pytest.raises(ValueError, match="merge"):
        PatchGram(3, 3).merge(PatchGram(3, 3, sample=4))


def test_bad_geometry_and_inputs_raise():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        fastprune.conv_influence(x, torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match="larger than the padded input"):
        fastprune.patch_gram(x, 3, dilation=3)
    with pytest.raises(ValueError, match="channels"):
        fastprune.conv_influence(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        fastprune.conv_influence(x, torch.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="stride"):
        fastprune.conv_influence(x, torch.randn(2, 4, 3, 3), stride=0)
    with pytest.raises(ValueError, match="same"):
        fastprune.patch_gram(x, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="expects 5"):
        InfluenceMoments(5, 3).update(x)
    with pytest.raises(TypeError, match="dtype"):
        InfluenceMoments(4, 3).update(x.to(torch.int32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        InfluenceMoments(4, 3).update(x[0])


def test_nonfinite_raises_with_count_and_changes_nothing():
    x = torch.randn(2, 4, 8, 8)
    acc = InfluenceMoments(4, 3, padding=1).update(x)
    before = acc.moments.clone()
    y = x.clone()
    y[0, 1, 2, 3] = float("nan")
    y[1, 3, 7, 7] = float("inf")
    y[1, 0, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match="3 non-finite"):
        acc.update(y)
    assert torch.equal(acc.moments, before) and acc.images == 2
    pg = PatchGram(4, 3, padding=1)
    with pytest.raises(ValueError, match="3 non-finite"):
        pg.update(y)
    assert pg.count == 0 and not pg.gram.any()
    with pytest.raises(ValueError, match="3 non-finite"):
        PatchGram(4, 3, padding=1, sample=5).update(y)


def test_results_are_deterministic_and_isa_independent():
    x = torch.randn(3, 20, 33, 29)
    w = torch.randn(7, 20, 3, 3)
    a = fastprune.conv_influence(x, w, padding=1)
    assert torch.equal(a, fastprune.conv_influence(x, w, padding=1))
    g1, _ = fastprune.patch_gram(x, 3, padding=1)  # enough work for several threads
    assert torch.equal(g1, fastprune.patch_gram(x, 3, padding=1)[0])
    best = fastprune.cpu_isa()
    try:
        fastprune.set_cpu_isa("baseline")
        b = fastprune.conv_influence(x, w, padding=1)
        g2, _ = fastprune.patch_gram(x, 3, padding=1)
    finally:
        fastprune.set_cpu_isa(best)
    assert elementwise_rel(a, b) <= TOL
    assert rel_err(g1, g2) <= TOL


def test_accepts_dlpack_arrays():
    np = pytest.importorskip("numpy")
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    w = torch.randn(2, 3, 3, 3)
    got = fastprune.conv_influence(x, w, padding=1)
    assert elementwise_rel(got, conv_influence_reference(torch.from_numpy(x), w, 1, 1)) <= TOL


def test_large_offset_and_long_rows_stay_accurate():
    # fp32 products are summed over bounded tiles and flushed to fp64
    # (mean 10^4 x std, rows of 3000 positions)
    x = torch.randn(1, 37, 6, 3000) * 0.01 + 100.0
    w = torch.randn(4, 37, 3, 3)
    got = fastprune.conv_influence(x, w, padding=1)
    assert elementwise_rel(got, conv_influence_reference(x, w, 1, 1)) <= TOL
    g = ConvGeometry.parse(3, 1, 1, 1)
    gram, _ = fastprune.patch_gram(x[:, :, :, :500], 3, padding=1)
    want = patch_gram_reference(x[:, :, :, :500], g)
    assert elementwise_rel(gram, want) <= TOL


@st.composite
def cases(draw):
    k = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    s = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    d = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    p = draw(st.tuples(st.integers(0, 3), st.integers(0, 3)))
    ext = [d[i] * (k[i] - 1) + 1 for i in range(2)]
    h = draw(st.integers(max(1, ext[0] - 2 * p[0]), 20))
    w = draw(st.integers(max(1, ext[1] - 2 * p[1]), 20))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 19))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    last = draw(st.booleans())
    return n, c, h, w, k, s, d, p, dtype, last


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(0, 2**31 - 1))
def test_hypothesis_shapes_strides_dtypes(case, seed):
    n, c, h, w, k, s, d, p, dtype, last = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).to(dtype)
    if last:
        x = x.to(memory_format=torch.channels_last)
    xf = x.float()  # the values the kernel sees
    g = ConvGeometry.parse(k, s, p, d)
    wt = torch.randn(3, c, *k, generator=gen)
    got = fastprune.conv_influence(x, wt, stride=s, padding=p, dilation=d)
    want = conv_influence_reference(xf, wt, s, p, d)
    assert rel_err(got, want) <= TOL
    gram, count = fastprune.patch_gram(x, k, stride=s, padding=p, dilation=d)
    ho, wo = g.out_size(h, w)
    assert count == n * ho * wo
    assert rel_err(gram, patch_gram_reference(xf, g)) <= TOL


def test_taps_that_never_touch_the_image_give_zero():
    # width 1 padded by 1, stride 2: every tap of the 1x1 kernel reads padding only
    x = torch.randn(1, 2, 1, 1)
    w = torch.randn(3, 2, 1, 1)
    got = fastprune.conv_influence(x, w, stride=(1, 2), padding=(0, 1))
    assert torch.equal(got, conv_influence_reference(x, w, (1, 2), (0, 1)))
    gram, count = fastprune.patch_gram(x, 1, stride=(1, 2), padding=(0, 1))
    assert count == 2 and not gram.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("last", [False, True])
def test_nonfinite_counted_on_vector_paths(dtype, last):
    x = torch.randn(2, 16, 9, 20).to(dtype)  # 16 channels, rows of 20: full 8x8 tiles and tails
    x[0, 3, 4, 5] = float("nan")
    x[1, 9, 8, 17] = float("inf")
    x[1, 15, 0, 19] = float("-inf")
    x[0, 0, 8, 0] = float("nan")
    if last:
        x = x.to(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="4 non-finite"):
        fastprune.conv_influence(x, torch.randn(2, 16, 3, 3), padding=1)
    with pytest.raises(ValueError, match="4 non-finite"):
        fastprune.patch_gram(x, 3, padding=1)


def test_nonfinite_counted_once_across_row_bands(isa):
    # 70 rows of 1000 are cut into row bands (band_rows: 14 rows with 16 lanes, 30 with 8): rows
    # 13 and 29 end a band, rows 14-15 and 30-31 start the next one and are also the halo rows
    # of the band before, which must not count them again; two threads take the bands
    x = torch.randn(2, 5, 70, 1000)
    for n, c, y, xx in [(0, 1, 13, 3), (0, 2, 14, 500), (1, 4, 15, 999), (1, 0, 0, 0), (0, 3, 29, 17),
                        (1, 1, 30, 996), (0, 4, 31, 64), (1, 3, 69, 998)]:  # 996-999: a row's scalar tail
        x[n, c, y, xx] = float("nan") if xx % 2 else float("inf")
    acc = InfluenceMoments(5, 3, padding=1)
    with pytest.raises(ValueError, match="8 non-finite"):
        acc.update(x)
    assert not acc.moments.any()
