"""CUDA back-end of the influence kernels against the float64 oracles (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch

import fastprune
from fastprune.stats.influence import InfluenceMoments, PatchGram, sample_positions
from fastprune.stats.influence_geometry import ConvGeometry
from fastprune.stats.influence_reference import conv_influence_reference, patch_gram_reference

pytestmark = pytest.mark.gpu
TOL = 1e-5


def rel(a, b):
    return float((a.cpu() - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("k,s,p,d,dtype,last", [
    (3, 1, 1, 1, torch.float32, False),
    (3, 2, 0, 1, torch.float16, True),
    (5, 1, "same", 2, torch.bfloat16, False),
    (1, 1, 0, 1, torch.float32, True),
])
def test_cuda_matches_reference(k, s, p, d, dtype, last):
    x = torch.randn(2, 24, 21, 19).to(dtype)
    if last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(7, 24, k, k)
    xc = x.cuda()
    got = fastprune.conv_influence(xc, w.cuda(), stride=s, padding=p, dilation=d)
    assert rel(got, conv_influence_reference(x.float(), w, s, p, d)) <= TOL
    g = ConvGeometry.parse(k, s, p, d)
    gram, count = fastprune.patch_gram(xc, k, stride=s, padding=p, dilation=d)
    assert rel(gram, patch_gram_reference(x.float(), g)) <= TOL
    ho, wo = g.out_size(21, 19)
    pos = sample_positions(0, 2, ho * wo, 0.3, 7)
    gram, count = fastprune.patch_gram(xc, k, stride=s, padding=p, dilation=d, sample=0.3, seed=7)
    assert count == pos.shape[0]
    assert rel(gram, patch_gram_reference(x.float(), g, pos)) <= TOL


def test_cuda_and_cpu_accumulators_merge():
    x = torch.randn(3, 8, 12, 12)
    a = InfluenceMoments(8, 3, padding=1).update(x[:1]).merge(InfluenceMoments(8, 3, padding=1).update(x[1:].cuda()))
    b = InfluenceMoments(8, 3, padding=1).update(x)
    assert rel(a.moments, b.moments) <= TOL
    g1 = PatchGram(8, 3, padding=1).update(x.cuda())
    g2 = PatchGram(8, 3, padding=1).update(x)
    assert rel(g1.gram, g2.gram) <= TOL


def test_cuda_nonfinite_raises():
    x = torch.randn(1, 4, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        fastprune.conv_influence(x.cuda(), torch.randn(2, 4, 3, 3).cuda())
