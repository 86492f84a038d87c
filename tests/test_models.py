"""Reference networks: parameter counts and MACs against published figures, shapes, create(),
U-Net level removal and the redundancy measure that chooses levels."""
from __future__ import annotations

import pytest
import torch
from _macs import count_macs, count_params

from fastprune.models import UNet, create, level_layers, remove_levels
from fastprune.models.deeplab import DeepLabV3Plus
from fastprune.models.resnet import ResNet
from fastprune.models.segnet import SegNet
from fastprune.models.ternausnet import TernausNet
from fastprune.models.vgg import VGG16


def test_unet_classic_matches_milesial():
    # milesial/Pytorch-UNet, UNet(n_channels=3, n_classes=2, bilinear=False): 31,037,698 parameters
    # (the figure its users report, e.g. "Params 31,037,698"); 31,037,633 with one class.
    assert count_params(UNet()) == 31_037_698
    assert count_params(UNet(num_classes=1)) == 31_037_633


def _unet_params(cin, classes, w0, depth, bn, transpose):
    """Independent closed form of our U-Net layout (double conv per level, up-conv, 1x1)."""
    def dconv(a, b):
        return (a * b * 9 + b * b * 9) + (4 * b if bn else 2 * b)
    w = [w0 * 2 ** i for i in range(depth + 1)]
    total = dconv(cin, w[0]) + sum(dconv(w[i], w[i + 1]) for i in range(depth))
    for i in range(depth):
        if transpose:
            total += w[i + 1] * (w[i + 1] // 2) * 4 + w[i + 1] // 2 + dconv(w[i + 1] // 2 + w[i], w[i])
        else:
            total += dconv(w[i + 1] + w[i], w[i])
    return total + w[0] * classes + classes


@pytest.mark.parametrize("w0,depth,bn,up", [(8, 1, True, "transpose"), (16, 3, False, "transpose"),
                                            (6, 2, True, "bilinear"), (4, 0, True, "bilinear")])
def test_unet_configurations(w0, depth, bn, up):
    m = UNet(3, 5, w0, depth, bn, up).eval()
    assert count_params(m) == _unet_params(3, 5, w0, depth, bn, up == "transpose")
    for hw in ((32, 32), (37, 45)):  # odd sizes are padded back to the skip size
        assert m(torch.randn(1, 3, *hw)).shape == (1, 5, *hw)


def test_vgg16_cifar_matches_li_et_al():
    # Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017), Table 1: VGG-16 on
    # CIFAR-10, 1.5e7 parameters, 3.13e8 FLOPs (multiply-adds).
    m = VGG16()
    assert abs(count_params(m) - 1.5e7) / 1.5e7 < 0.005
    macs = count_macs(m, torch.randn(1, 3, 32, 32))
    assert abs(macs - 3.13e8) / 3.13e8 < 0.002
    assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_segnet_matches_published():
    # SegNet paper (TPAMI 2017) Table 6: 29.5M; ENet paper (Paszke et al. 2016) Table 3:
    # SegNet 29.46M parameters, 286.03 GFLOPs (= 2 x MACs, all layers) at 640x360.
    m = SegNet()
    assert abs(count_params(m) - 29.46e6) / 29.46e6 < 0.001
    with torch.device("meta"):  # shapes only: MACs without the arithmetic
        macs = count_macs(SegNet(), torch.empty(1, 3, 360, 640))
    assert abs(2 * macs - 286.03e9) / 286.03e9 < 0.015  # ours counts conv/linear only
    assert m.eval()(torch.randn(1, 3, 360 // 4, 480 // 4)).shape == (1, 12, 90, 120)  # odd sizes


def test_ternausnet_matches_reference_layout():
    # ternaus/TernausNet UNet11(num_filters=32): VGG11 features (9,220,480 parameters, as
    # torchvision's vgg11().features) + decoder blocks listed layer by layer below.
    def conv(a, b, k=3):
        return a * b * k * k + b
    vgg11 = conv(3, 64) + conv(64, 128) + conv(128, 256) + conv(256, 256) + conv(256, 512) + 3 * conv(512, 512)
    assert vgg11 == 9_220_480
    decoder = (conv(512, 512) + conv(512, 256) + conv(768, 512) + conv(512, 256) + conv(768, 512)
               + conv(512, 128) + conv(384, 256) + conv(256, 64) + conv(192, 128) + conv(128, 32)
               + conv(96, 32) + conv(32, 1, 1))
    m = TernausNet()
    assert count_params(m) == vgg11 + decoder == 22_927_393
    assert m.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_resnet_backbones_match_torchvision():
    # torchvision model docs: resnet18 11,689,512 params, 1.81 GFLOPS; resnet50 25,557,032,
    # 4.09 GFLOPS (multiply-adds, 224x224).
    for depth, params, gmacs in ((18, 11_689_512, 1.81), (50, 25_557_032, 4.09)):
        with torch.device("meta"):
            m = ResNet(depth, num_classes=1000)
            assert count_params(m) == params
            assert abs(count_macs(m, torch.empty(1, 3, 224, 224)) / 1e9 - gmacs) < 0.01


def test_deeplabv3plus_matches_smp():
    # segmentation_models_pytorch DeepLabV3Plus(encoder resnet50, classes=1): 26.7M parameters
    # (the encoder table's figure); with resnet18: 12.3M. Exact: encoder without fc + ASPP +
    # decoder + head.
    for backbone, enc, expect in (("resnet50", 25_557_032 - 2048 * 1000 - 1000, 26.7e6),
                                  ("resnet18", 11_689_512 - 512 * 1000 - 1000, 12.3e6)):
        m = DeepLabV3Plus(num_classes=1, backbone=backbone)
        assert count_params(m.encoder) == enc
        assert abs(count_params(m) - expect) / expect < 0.003
    for os_ in (16, 8):
        m = DeepLabV3Plus(num_classes=12, backbone="resnet18", output_stride=os_).eval()
        feats = m.encoder.features(torch.randn(1, 3, 64, 64))
        assert feats[-1].shape[-1] == 64 // os_
        assert m(torch.randn(1, 3, 64, 80)).shape == (1, 12, 64, 80)


def test_create_names_and_errors():
    assert isinstance(create("unet", base_width=4, depth=1), UNet)
    assert isinstance(create("TernausNet"), TernausNet)
    assert isinstance(create("vgg16", num_classes=100), VGG16)
    assert isinstance(create("segnet", num_classes=3), SegNet)
    assert isinstance(create("deeplabv3plus", backbone="resnet18"), DeepLabV3Plus)
    with pytest.raises(ValueError, match="unknown model"):
        create("alexnet")
    with pytest.raises(ValueError, match="bad option"):
        create("unet", widht=3)
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="nearest")
    with pytest.raises(ValueError, match="backbone"):
        DeepLabV3Plus(backbone="resnet34x")


@pytest.mark.parametrize("up", ["transpose", "bilinear"])
def test_remove_levels_keeps_weights_and_works(up):
    m = UNet(3, 2, 4, 3, True, up)
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    for n in (1, 2, 3):
        small = remove_levels(m, n).eval()
        assert small.depth == 3 - n and len(small.downs) == 3 - n
        # Oracle: a fresh shallower U-Net loaded with the surviving weights, keys re-indexed.
        ref = UNet(3, 2, 4, 3 - n, True, up)
        sd = {}
        for k, v in before.items():
            parts = k.split(".")
            if parts[0] == "downs" and int(parts[1]) >= 3 - n:
                continue
            if parts[0] == "ups":
                if int(parts[1]) < n:
                    continue
                parts[1] = str(int(parts[1]) - n)
            sd[".".join(parts)] = v
        ref.load_state_dict(sd)
        torch.testing.assert_close(small(x), ref.eval()(x))
        assert count_params(small) == count_params(ref)
    for k, v in m.state_dict().items():  # input untouched
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="n_levels"):
        remove_levels(m, 4)
    with pytest.raises(TypeError):
        remove_levels(SegNet(), 1)


def test_remove_levels_rejects_decoupled_pruned_model():
    m = UNet(3, 2, 4, 2)
    # simulate a pruner having shrunk the level-1 encoder output but not ups.1's up-conv input
    m.downs[0][1][3] = torch.nn.Conv2d(8, 6, 3, padding=1, bias=False)
    with pytest.raises(ValueError, match="prune after removing"):
        remove_levels(m, 1)


