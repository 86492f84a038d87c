"""Channel groups found by the tracer: couplings, offsets, blocks, and blocking reasons."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastprune.graph import DependencyGraph

from graph_util import one_thread
from zoo import ZOO, SegNet, UNet, VGG

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


def graph(name):
    fac, shape = ZOO[name]
    return DependencyGraph(fac().eval(), torch.randn(shape))


def member(group, module, dim):
    ms = [m for m in group.members if m.module == module and m.dim == dim]
    assert ms, (module, dim)
    return ms


def test_vgg_chain_and_flatten_blocks():
    g = graph("vgg")
    assert len(g.groups) == 7
    grp = g.group_of("features.6")
    assert grp.channels == 24 and grp.prunable and not grp.touches_output
    (fc,) = member(grp, "classifier.1", "in")
    assert fc.kind == "linear" and fc.block == 16 and fc.indices == list(range(0, 24 * 16, 16))
    assert g.group_of("classifier.4").touches_output
    bn = member(g.group_of("features.0.0"), "features.0.1", "out")[0]
    assert bn.kind == "batchnorm"


def test_concat_offsets_unet():
    g = graph("unet")
    up = g.group_of("up2")
    skip = g.group_of("enc2.1.0")
    assert up is not skip
    assert member(up, "dec2.0.0", "in")[0].indices == list(range(16))
    assert member(skip, "dec2.0.0", "in")[0].indices == list(range(16, 32))
    assert member(up, "up2", "out")[0].kind == "conv_transpose"
    # second skip is concatenated first
    assert member(g.group_of("enc1.1.0"), "dec1.0.0", "in")[0].indices == list(range(8))
    assert member(g.group_of("up1"), "dec1.0.0", "in")[0].indices == list(range(8, 16))


def test_segnet_unpool_couples_decoder_with_encoder_indices():
    g = graph("segnet")
    # the tensor unpooled with e1's indices comes from d2.1: both must keep the same channels
    assert g.group_of("d2.1.0") is g.group_of("e1.1.0")
    assert g.group_of("d2.0.0") is not g.group_of("e2.1.0")
    assert g.group_of("e2.1.0").channels == 16


def test_residual_depthwise_se_couplings():
    g = graph("mobilenet_v2")
    grp = g.group_of("features.2.conv.0.0")  # expand conv of the second block
    kinds = {(m.module, m.kind) for m in grp.producers}
    assert ("features.2.conv.1.0", "depthwise") in kinds
    # residual: both projections of the stage-2 blocks share a group
    assert g.group_of("features.2.conv.2") is g.group_of("features.3.conv.2")
    e = graph("efficientnet_se")
    grp = e.group_of("blocks.0.expand.0")
    assert {"blocks.0.se.fc2", "blocks.0.dw.0"} <= {m.module for m in grp.producers}
    assert "blocks.0.se.fc1" in {m.module for m in grp.consumers}
    assert e.group_of("blocks.0.se.fc1") is not grp


def test_aspp_image_pooling_branch_offsets():
    g = graph("deeplabv3plus")
    pool = g.group_of("aspp.pool.1")
    (m,) = member(pool, "aspp.project.0.0", "in")
    assert m.indices == list(range(48, 64))
    assert not pool.touches_output and pool.prunable
    assert g.group_of("cls").touches_output  # dict output


def test_densenet_concat_chain():
    g = graph("densenet")
    conv0 = g.group_of("conv0")
    ins = [(m.module, m.indices[0]) for m in conv0.consumers]
    assert ("block1.0.conv1", 0) in ins and ("block1.2.conv1", 0) in ins and ("trans.2", 0) in ins
    layer1 = g.group_of("block1.0.conv2")
    assert [m.indices[0] for m in layer1.consumers if m.module == "block1.2.conv1"] == [12]
    norms = [m for m in layer1.members if m.module == "block1.1.norm1"]
    assert norms and norms[0].indices == list(range(12, 18))


def test_groupnorm_whole_groups_and_grouped_conv_positions():
    g = graph("coverage")
    gn = g.group_of("c1")
    assert gn.channels == 4  # GroupNorm(4, 16): a group channel is a whole normalisation group
    (m,) = member(gn, "c1", "out")
    assert m.block == 4
    grouped = g.group_of("g2")
    assert grouped.channels == 4  # groups=4, 16 out: position q of every conv group goes together
    assert len([p for p in grouped.producers if p.module == "g2"]) == 4
    assert g.group_of("pw").channels == 6  # chunk(2) couples the halves


def test_weight_sharing_and_kwargs_inputs():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.c = nn.Conv2d(8, 2, 1)

        def forward(self, x, scale=1.0):
            y = F.relu(self.a(x))
            y = F.relu(self.b(y))
            y = F.relu(self.b(y)) * scale  # the same conv twice: its input and output are coupled
            return {"y": self.c(y)}

    g = DependencyGraph(Shared(), {"x": torch.randn(1, 3, 8, 8), "scale": 2.0})
    assert g.group_of("a") is g.group_of("b")


@pytest.mark.parametrize("body,word", [
    (lambda s, x: torch.cat(list(torch.split(x, [3, 5], 1)), 1), "split"),
    (lambda s, x: x[:, :4].repeat(1, 2, 1, 1), "fixed positions"),
    (lambda s, x: x * x.mean(1, keepdim=True), "reduces over the channel"),
    (lambda s, x: F.layer_norm(x.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2), "layer_norm"),
    (lambda s, x: torch.einsum("nchw,nchw->nchw", x, x), "einsum"),
    (lambda s, x: F.softmax(x, dim=1), "softmax"),
    (lambda s, x: x + torch.linspace(0, 1, 8).view(1, 8, 1, 1), "created in forward"),
    (lambda s, x: F.group_norm(x, 1), "one group"),
    (lambda s, x: torch.fft.fft2(x).real, "fft"),
    (lambda s, x: x.view(1, 2, 256).flip(1).view(1, 8, 8, 8), "splits the channel dimension"),
    (lambda s, x: x.view(1, 2, 4, 8, 8)[:, :, :3].reshape(1, 6, 8, 8).repeat(1, 2, 1, 1)[:, :8], "fixed positions"),
])
def test_unsupported_ops_block_with_named_reason(body, word):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 4, 1)
            self.free = nn.Conv2d(4, 5, 1)

        def forward(self, x):
            return self.free(self.b(body(self, self.a(x))))

    g = DependencyGraph(M(), torch.randn(1, 3, 8, 8))
    grp = g.group_of("a")
    assert not grp.prunable and word in grp.blocked_by
    assert g.group_of("b").prunable  # blocking stays local


def test_channels_last_layout_ops_pass():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.lin = nn.Linear(8, 6)
            self.b = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.a(x).permute(0, 2, 3, 1)  # NHWC
            y = F.gelu(self.lin(y)).permute(0, 3, 1, 2).contiguous()
            return self.b(y)

    g = DependencyGraph(M(), torch.randn(1, 3, 8, 8))
    assert g.group_of("a").prunable and g.group_of("lin").prunable
    assert [m.module for m in g.group_of("a").consumers] == ["lin"]
    assert [m.module for m in g.group_of("lin").consumers] == ["b"]


def test_fingerprint_stable_and_distinct():
    x = torch.randn(1, 3, 16, 16)
    torch.manual_seed(1)
    a = DependencyGraph(UNet(), x).fingerprint()
    torch.manual_seed(2)
    b = DependencyGraph(UNet(), x).fingerprint()
    assert a == b
    assert DependencyGraph(UNet(c=4), x).fingerprint() != a
    assert DependencyGraph(SegNet(), x).fingerprint() != a


def test_untraceable_model_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.a(x.view(-1, 7))

    m = Bad()
    with pytest.raises(ValueError, match="cannot trace Bad"):
        DependencyGraph(m, torch.randn(1, 3, 8, 8))
    assert all(not mod._forward_pre_hooks and not mod._forward_hooks for mod in m.modules())
    with pytest.raises(TypeError):
        DependencyGraph(lambda x: x, torch.randn(1))


def test_trace_leaves_running_stats_alone():
    m = VGG().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    DependencyGraph(m, torch.randn(2, 3, 16, 16))
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_group_of_errors():
    g = graph("vgg")
    with pytest.raises(ValueError, match="no module named"):
        g.group_of("nope")
    with pytest.raises(ValueError, match="produces no prunable"):
        g.group_of("features.0.1")


def test_pixel_shuffle_couples_blocks_and_new_tensors_pass():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(4, 8, 3, padding=1)
            self.c = nn.Conv2d(32, 2, 1)

        def forward(self, x):
            y = self.b(F.pixel_shuffle(self.a(x), 2))
            z = F.pixel_unshuffle(y, 2)
            z = z + z.new_zeros(1) + torch.zeros_like(z).type_as(x)
            return self.c(z)

    m = M().eval()
    x = torch.randn(1, 3, 8, 8)
    g = DependencyGraph(m, x)
    a = g.group_of("a")
    assert a.channels == 4 and a.prunable and a.producers[0].block == 4
    b = g.group_of("b")
    assert b.channels == 8 and b.prunable and b.consumers[0].block == 4
    from fastprune.surgery import masked, prune
    p = prune(m, {"a": [4], "b": [0, 7]}, x)
    assert p.a.out_channels == 12 and p.b.in_channels == 3 and p.c.in_channels == 24
    with masked(m, {"a": [5], "b": [0, 7]}, x), torch.no_grad():
        ref = m(x)
    assert torch.allclose(p(x), ref, atol=1e-5)


def test_channel_shuffle_couples_positions_across_groups():
    g = graph("shufflenet")
    assert all(gr.prunable for gr in g.groups)
    grp = g.group_of("units.0.branch.2.0")
    # chunk + shuffle of unit 0, then chunk of unit 1 on the interleaved order: 16 -> 8 -> 4 classes
    assert grp is g.group_of("stem.0") and grp.channels == 4


ACTIVATIONS = [nn.ReLU(inplace=True), nn.ReLU6(), nn.LeakyReLU(0.2, inplace=True), nn.PReLU(8), nn.PReLU(), nn.ELU(),
               nn.SELU(), nn.CELU(), nn.GELU(), nn.GELU("tanh"), nn.SiLU(inplace=True), nn.Mish(), nn.Hardswish(),
               nn.Hardsigmoid(), nn.Hardtanh(-2, 2), nn.Sigmoid(), nn.Tanh(), nn.Softplus(), nn.Softsign(),
               nn.Tanhshrink(), nn.Softshrink(), nn.Hardshrink(), nn.LogSigmoid(), nn.Threshold(0.1, 0.5),
               nn.RReLU(), nn.Dropout(0.3), nn.Dropout2d(), nn.AlphaDropout(0.2), nn.Identity()]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: repr(a))
def test_every_elementwise_activation_passes_channels(act):
    from fastprune.surgery import masked, prune

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act, nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                      nn.Linear(16, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    g = DependencyGraph(m, x)
    assert g.group_of("0").prunable and [c.module for c in g.group_of("0").consumers] == ["2"]
    p = prune(m, {"0": [1, 4, 6], "2": [0]}, x)
    with masked(m, {"0": [1, 4, 6], "2": [0]}, x), torch.no_grad():
        ref = m(x)
    assert torch.allclose(p(x), ref, rtol=1e-5, atol=1e-6)


def _two_convs(body) -> nn.Module:
    """conv a (3 -> 8) -> body -> conv b (8 -> 2): `body` decides whether a's channels can go."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.b(body(self.a(x)))

    return M()


@pytest.mark.parametrize("body,ok", [
    (lambda x: x.narrow(1, 0, x.shape[1]), True),
    (lambda x: torch.narrow(x, 1, 2, 4).repeat(1, 2, 1, 1), False),
    (lambda x: torch.split(x, 8, dim=1)[0], True),
    (lambda x: torch.cat(torch.split(x, 4, dim=1), 1), False),
    (lambda x: x[:, :100], True),
    (lambda x: x[..., 1:-1, ::2], True),
    (lambda x: x[:, :, None].squeeze(2).unsqueeze(-1).flatten(-2), True),
    (lambda x: torch.cat(x.chunk(4, dim=1)[::-1], 1), True),
    (lambda x: torch.cat(torch.tensor_split(x, 2, dim=1), 1), True),
    (lambda x: torch.stack([x, x], 0).sum(0), True),
])
def test_slicing_along_channels(body, ok):
    g = DependencyGraph(_two_convs(body), torch.randn(1, 3, 6, 6))
    assert g.group_of("a").prunable is ok, g.group_of("a").blocked_by


def test_per_channel_constants_computed_from_buffers():
    class FrozenBN(nn.Module):  # torchvision.ops.FrozenBatchNorm2d, re-implemented
        def __init__(self, n):
            super().__init__()
            self.register_buffer("weight", torch.rand(n) + 0.5)
            self.register_buffer("bias", torch.randn(n))
            self.register_buffer("running_mean", torch.randn(n))
            self.register_buffer("running_var", torch.rand(n) + 0.5)

        def forward(self, x):
            scale = self.weight * (self.running_var + 1e-5).rsqrt()
            bias = self.bias - self.running_mean * scale
            return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FrozenBN(8), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    g = DependencyGraph(m, x)
    grp = g.group_of("0")
    assert grp.prunable
    assert {(mm.module, mm.param) for mm in grp.members if mm.kind == "param"} == {
        ("1", "weight"), ("1", "bias"), ("1", "running_mean"), ("1", "running_var")}
    from fastprune.surgery import masked, prune
    p = prune(m, {"0": [0, 5]}, x)
    assert p[1].running_var.shape == (6,)
    with masked(m, {"0": [0, 5]}, x), torch.no_grad():
        assert torch.allclose(p(x), m(x), atol=1e-6)


def test_shape_only_arguments_do_not_carry_channels():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 2, 1)
            self.s = nn.Parameter(torch.rand(1, 8, 1, 1))

        def forward(self, x):
            y = self.a(x)
            z = torch.zeros(1, 1, 1, 1).expand_as(y) if self.const else 0
            return self.b(y * self.s.expand_as(y) + z)

    m = M()
    x = torch.randn(1, 3, 4, 4)
    m.const = False
    g = DependencyGraph(m, x)
    assert g.group_of("a").prunable
    assert [(mm.module, mm.param, mm.axis) for mm in g.group_of("a").members if mm.kind == "param"] == [("", "s", 1)]
    from fastprune.surgery import prune
    assert prune(m, {"a": [2]}, x).s.shape == (1, 7, 1, 1)
    m.const = True
    g = DependencyGraph(m, x)
    assert g.group_of("a").prunable is False and "created in forward" in g.group_of("a").blocked_by


def test_se_with_linear_layers_and_views():
    class SE(nn.Module):  # the squeeze-excite of SENet / SE-ResNeXt codebases
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(3, c, 3, padding=1)
            self.fc = nn.Sequential(nn.Linear(c, c // 4), nn.ReLU(inplace=True), nn.Linear(c // 4, c), nn.Sigmoid())
            self.out = nn.Conv2d(c, 2, 1)

        def forward(self, x):
            x = self.conv(x)
            b, c, _, _ = x.size()
            y = F.adaptive_avg_pool2d(x, 1).view(b, c)
            y = self.fc(y).view(b, c, 1, 1)
            return self.out(x * y.expand_as(x))

    m = SE(8).eval()
    x = torch.randn(2, 3, 5, 5)
    g = DependencyGraph(m, x)
    grp = g.group_of("conv")
    assert grp is g.group_of("fc.2") and grp.prunable
    assert {c.module for c in grp.consumers} == {"fc.0", "out"}
    from fastprune.surgery import masked, prune
    p = prune(m, {"fc.2": [1, 2, 7]}, x)
    assert p.conv.out_channels == 5 and p.fc[0].in_features == 5
    with masked(m, {"conv": [1, 2, 7]}, x), torch.no_grad():
        assert torch.allclose(p(x), m(x), atol=1e-6)


@pytest.mark.parametrize("make,ok", [
    (lambda y: torch.zeros(y.shape[0], y.shape[1], 1, 1), True),
    (lambda y: torch.empty(y.shape[0], y.shape[1], 1, 1).bernoulli_(0.8).div_(0.8), True),
    (lambda y: y.new_ones(y.shape) * 2, True),
    (lambda y: torch.arange(y.shape[1]).view(1, -1, 1, 1).float(), False),
    (lambda y: _written(torch.zeros(1, y.shape[1], 1, 1)), False),
    (lambda y: torch.ones(1, y.shape[1], 1, 1).mul_(torch.randn(1, y.shape[1], 1, 1)), False),
])
def test_uniform_constants_made_in_forward(make, ok):
    g = DependencyGraph(_two_convs(lambda y: y * make(y) + y), torch.randn(2, 3, 4, 4))
    assert g.group_of("a").prunable is ok


def _written(t):
    t[:, 0] = 1.0
    return t


# Statistics files and plans carry the graph's fingerprint, and loading refuses a mismatch: a
# rewrite of the graph builder must keep every fingerprint. These were computed by the builder
# that made one Record per channel (before 940c00b), which the array-based one replaced.
FINGERPRINTS = {
    ("fastprune", "unet", (1, 3, 96, 96)): "05f223bf616beddb64a33d6d4a404fee",
    ("fastprune", "segnet", (1, 3, 96, 96)): "e7b2562a42c0a416ffb2b54b7f4a0a23",
    ("fastprune", "deeplabv3plus", (1, 3, 96, 96)): "392350484ceb7cc0f2dacf2ed4b5a66a",
    ("fastprune", "ternausnet", (1, 3, 96, 96)): "96c9cd35832cab696ccdbad1fb02f35a",
    ("fastprune", "vgg16", (1, 3, 64, 64)): "4bed068a5b8c80cd274006b40e0c0212",
    ("zoo", "densenet", None): "9aed654d3f4cb5caa997033fadc3c74e",
    ("zoo", "mobilenet_v3", None): "a9aff2f8d1ac153d604cda72d4f23e64",
    ("zoo", "resnet_bottleneck", None): "5bcdfcb0eb11d6cec8fc94f7e88b1b47",
    ("zoo", "shufflenet", None): "4309a1760d94d3cb010e46e69ee25a36",
}


@pytest.mark.parametrize("source, name, shape", list(FINGERPRINTS))
def test_fingerprints_of_earlier_releases_still_hold(source, name, shape):
    from fastprune.models import create

    if source == "zoo":
        ctor, shape = ZOO[name]
        model = ctor()
    else:
        model = create(name)
    g = DependencyGraph(model.eval(), torch.rand(*shape))
    assert g.fingerprint() == FINGERPRINTS[(source, name, shape if source == "fastprune" else None)]
