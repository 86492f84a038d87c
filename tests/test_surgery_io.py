"""Bad input leaves the model untouched; plans and pruned models replay on a fresh model."""

import pytest
import torch

import fastprune
from fastprune.graph import DependencyGraph
from fastprune.surgery import load_pruned, masked, prune, save_pruned

from graph_util import one_thread, outputs, random_removal, rel_err
from zoo import ZOO, SegNet, UNet

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same(m, snap):
    sd = m.state_dict()
    return sd.keys() == snap.keys() and all(torch.equal(sd[k], snap[k]) for k in snap) and \
        all(not mod._forward_pre_hooks and not mod._forward_hooks for mod in m.modules())


@pytest.mark.parametrize("removal,err,msg", [
    ({"nope": [0]}, ValueError, "does not exist"),
    ({"enc1.0.1": [0]}, ValueError, "produces no prunable"),
    ({"enc1.0.0": [8]}, ValueError, "out of range"),
    ({"enc1.0.0": [-1]}, ValueError, "out of range"),
    ({"enc1.0.0": list(range(8))}, ValueError, "all 8 channels"),
    ({"head": [0]}, ValueError, "output"),
    ({"enc1.0.0": ["a"]}, ValueError, "whole number"),
    ({"enc1.0.0": [0.7]}, ValueError, "whole number"),   # issue 15 item 8: was truncated to 0
    ({"enc1.0.0": [True]}, ValueError, "whole number"),  # was channel 1
    ({"enc1.0.0": "01"}, ValueError, "list of indices"),
    ([("enc1.0.0", [0])], TypeError, "Plan or a dict"),
])
def test_bad_removal_is_a_clear_error_and_changes_nothing(removal, err, msg):
    m = UNet().eval()
    x = torch.randn(1, 3, 16, 16)
    snap = _snapshot(m)
    with pytest.raises(err, match=msg):
        prune(m, removal, x, inplace=True)
    with pytest.raises(err, match=msg):
        masked(m, removal, x)
    assert _same(m, snap)


def test_blocked_group_refuses():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 1)
            self.b = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.b(self.a(x)[:, :4])

    m = M()
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="cannot be pruned.*fixed positions"):
        prune(m, {"a": [5]}, torch.randn(1, 3, 4, 4), inplace=True)
    assert _same(m, snap)


def test_plan_with_wrong_channel_count():
    m = UNet().eval()
    plan = fastprune.Plan(keep={"enc1.0.0": [0, 1]}, channels={"enc1.0.0": 9})
    with pytest.raises(ValueError, match="has 8"):
        prune(m, plan, torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("name", ["unet", "segnet", "coverage", "efficientnet_se", "resnext"])
def test_save_load_replay(tmp_path, name):
    fac, shape = ZOO[name]
    torch.manual_seed(0)
    m = fac().eval()
    x = torch.randn(shape)
    g = DependencyGraph(m, x)
    removal, chosen = random_removal(g, 0.5, seed=5)
    keep = {}
    for p in removal:
        grp = g.group_of(p)
        gone = {q for m in grp.producers if m.module == p for c in chosen[grp.id] for q in m.positions(c)}
        keep[p] = [i for i in range(g.producer_channels(p)) if i not in gone]
    plan = fastprune.Plan(keep=keep, channels={p: g.producer_channels(p) for p in keep}, meta={"fingerprint": g.fingerprint()})
    pruned = prune(m, plan, x, graph=g)
    # fine-tuned weights must come back too, not just the architecture
    with torch.no_grad():
        for p in pruned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_pruned(pruned, plan, tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.pt"))
    plan2 = fastprune.Plan.load(tmp_path / "model" / "plan.json")
    assert plan2.keep == plan.keep
    loaded = load_pruned(fac, tmp_path / "model")
    loaded.eval()
    assert rel_err(outputs(pruned, x), outputs(loaded, x)) == 0


def test_prune_twice_then_replay(tmp_path):
    torch.manual_seed(0)
    m = SegNet().eval()
    x = torch.randn(1, 3, 16, 16)
    a = prune(m, {"e1.0.0": [0, 1]}, x)
    b = prune(a, {"e2.1.0": [3, 4, 5]}, x)
    plan = fastprune.Plan(keep={}, channels={})
    save_pruned(b, plan, tmp_path / "m")
    c = load_pruned(SegNet, tmp_path / "m")
    assert rel_err(outputs(b.eval(), x), outputs(c.eval(), x)) == 0
    with pytest.raises(ValueError):
        load_pruned(UNet, tmp_path / "m")
    with pytest.raises(ValueError, match="not a saved pruned model"):
        load_pruned(SegNet, tmp_path)
    with pytest.raises(ValueError, match="not made by fastprune.prune"):
        save_pruned(m, plan, tmp_path / "x")


def test_coupled_producers_must_agree():
    m = ZOO["resnet_basic"][0]().eval()
    x = torch.randn(1, 3, 32, 32)
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="coupled"):
        prune(m, {"conv1": [0, 1], "layers.0.0.conv2": [0, 2]}, x, inplace=True)
    plan = fastprune.Plan(keep={"conv1": list(range(8)), "layers.0.0.conv2": list(range(1, 8))},
                          channels={"conv1": 8, "layers.0.0.conv2": 8})
    with pytest.raises(ValueError, match="coupled"):
        prune(m, plan, x)
    assert _same(m, snap)
    p = prune(m, {"conv1": [0, 1], "layers.0.0.conv2": [1, 0]}, x)  # same channels: fine
    assert p.conv1.out_channels == 6


def test_inplace_failure_restores_the_model():
    class HardCoded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y.reshape(1, 8, 8, 8))  # channel count written into the code

    m = HardCoded()
    x = torch.randn(1, 3, 8, 8)
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="hard-codes"):
        prune(m, {"a": [0]}, x, inplace=True)
    assert _same(m, snap) and m.a.out_channels == 8 and m.b.in_channels == 8


def test_unreached_modules_warn():
    m = ZOO["inception"][0]().eval()  # the aux head only runs in training
    x = torch.randn(2, 3, 16, 16)
    g = DependencyGraph(m, x)
    assert g.unreached == ["aux"]
    with pytest.warns(UserWarning, match="aux"):
        prune(m, {"stem.0": [0]}, x, graph=g)


def test_plan_keeping_one_channel_of_a_block_keeps_the_block():
    m = ZOO["coverage"][0]().eval()
    x = torch.randn(2, 3, 8, 8)
    g = DependencyGraph(m, x)
    (c1,) = [p for p in g.group_of("c1").producers if p.module == "c1"]
    plan = fastprune.Plan(keep={"c1": [c1.indices[c] for c in (0, 2, 3)]}, channels={"c1": 16})  # GroupNorm groups
    p = prune(m, plan, x, graph=g)
    assert p.c1.out_channels == 12 and p.gn1.num_groups == 3
    assert rel_err(outputs(p, x), outputs(prune(m, {"c1": [5]}, x, graph=g), x)) == 0
