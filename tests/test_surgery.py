"""Physical pruning against independent oracles: dead-channel copies and masking."""
import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastprune
from fastprune.graph import DependencyGraph
from fastprune.surgery import masked, prune

from graph_util import dead_copy, n_params, one_thread, outputs, random_removal, rel_err
from zoo import ZOO

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
pytestmark = pytest.mark.filterwarnings("ignore:fastprune. modules with parameters that the example input does not reach")


def _make(name):
    fac, shape = ZOO[name]
    torch.manual_seed(0)
    m = fac()
    # non-trivial running statistics so eval-mode norms are not identities
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return m.eval(), torch.randn(shape)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_dead_channel_equivalence(name):
    model, x = _make(name)
    g = DependencyGraph(model, x)
    removal, chosen = random_removal(g, 0.5, seed=1)
    assert chosen, "every zoo model has prunable groups"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, removal, x)
    dead = dead_copy(model, g, chosen)
    assert rel_err(outputs(dead, x), outputs(pruned, x)) <= 1e-5
    assert n_params(pruned) < n_params(model)
    # the original is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("name", sorted(ZOO))
def test_masked_equals_pruned(name):
    model, x = _make(name)
    g = DependencyGraph(model, x)
    removal, _ = random_removal(g, 0.5, seed=2)
    pruned = prune(model, removal, x, graph=g)
    ref = outputs(model, x)
    with masked(model, removal, x, graph=g):
        got = outputs(model, x)
    assert rel_err(got, outputs(pruned, x)) <= 1e-5
    assert rel_err(outputs(model, x), ref) == 0  # hooks removed


@pytest.mark.parametrize("name", sorted(ZOO))
def test_random_half_in_every_group_train_mode(name):
    model, x = _make(name)
    model.train()
    g = DependencyGraph(model, x)
    removal, chosen = random_removal(g, 0.5, seed=3)
    pruned = prune(model, removal, x, graph=g)
    out_a, out_b = outputs(model, x), outputs(pruned, x)
    assert [t.shape for t in out_a] == [t.shape for t in out_b]
    assert n_params(pruned) < n_params(model)
    # every producer lost exactly the positions of the chosen group channels
    gone = {}
    for gid, cs in chosen.items():
        for m in g.groups[gid].producers:
            gone.setdefault(m.module, set()).update(p for c in cs for p in m.positions(c))
    mods, pmods = dict(model.named_modules()), dict(pruned.named_modules())
    for name_, s in gone.items():
        attr = "out_features" if isinstance(mods[name_], torch.nn.Linear) else "out_channels"
        assert getattr(pmods[name_], attr) == getattr(mods[name_], attr) - len(s), name_


def test_attributes_updated():
    model, x = _make("coverage")
    g = DependencyGraph(model, x)
    removal, _ = random_removal(g, 0.5, seed=4)
    pruned = prune(model, removal, x, graph=g)
    for name, mod in pruned.named_modules():
        if isinstance(mod, torch.nn.modules.conv._ConvNd):
            w = mod.weight
            if mod.transposed:
                assert w.shape[0] == mod.in_channels and w.shape[1] * mod.groups == mod.out_channels
            else:
                assert w.shape[0] == mod.out_channels and w.shape[1] * mod.groups == mod.in_channels
        if isinstance(mod, torch.nn.GroupNorm):
            assert mod.weight.shape[0] == mod.num_channels and mod.num_channels % mod.num_groups == 0
        if isinstance(mod, torch.nn.modules.batchnorm._NormBase) and mod.weight is not None:
            assert mod.weight.shape[0] == mod.num_features
        if isinstance(mod, torch.nn.Linear):
            assert mod.weight.shape == (mod.out_features, mod.in_features)
        if isinstance(mod, torch.nn.PReLU):
            assert mod.weight.numel() == mod.num_parameters
    gn = pruned.gn1
    assert gn.num_channels // gn.num_groups == 4  # whole normalisation groups went


def test_inplace_and_plan():
    model, x = _make("vgg")
    g = DependencyGraph(model, x)
    grp = g.group_of("features.0.0")
    plan = fastprune.Plan(keep={"features.0.0": list(range(0, 16, 2))}, channels={"features.0.0": 16})
    a = prune(model, plan, x)
    b = prune(copy.deepcopy(model), {"features.0.0": list(range(1, 16, 2))}, x)
    assert rel_err(outputs(a, x), outputs(b, x)) <= 1e-6
    m2 = copy.deepcopy(model)
    c = prune(m2, plan, x, inplace=True)
    assert c is m2 and m2.features[0][0].out_channels == 8
    assert grp.channels == 16


def test_output_channels_need_permission():
    model, x = _make("unet")
    g = DependencyGraph(model, x)
    (out_group,) = [gr for gr in g.groups if gr.touches_output]
    assert [m.module for m in out_group.producers] == ["head"]
    with pytest.raises(ValueError, match="output"):
        prune(model, {"head": [0]}, x)
    pruned = prune(model, {"head": [0]}, x, allow_output=True)
    assert outputs(pruned, x)[0].shape[1] == 2
    assert torch.allclose(outputs(pruned, x)[0], outputs(model, x)[0][:, 1:], atol=1e-6)


def test_coupled_channels_go_together():
    model, x = _make("resnet_basic")
    g = DependencyGraph(model, x)
    grp = g.group_of("layers.0.0.conv2")
    names = {m.module for m in grp.producers}
    assert {"maxpool"} - names and {"conv1", "layers.0.0.conv2", "layers.0.1.conv2"} <= names
    pruned = prune(model, {"layers.0.1.conv2": [0, 3]}, x)
    assert pruned.conv1.out_channels == 6 and pruned.layers[0][0].conv2.out_channels == 6
    assert pruned.layers[0][0].conv1.in_channels == 6 and pruned.layers[1][0].downsample[0].in_channels == 6


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), frac=st.floats(0.05, 0.95), name=st.sampled_from(["mobilenet_v2", "densenet", "segnet", "deeplabv3plus", "resnext"]))
def test_random_removals_match_dead_copy(seed, frac, name):
    model, x = _make(name)
    g = DependencyGraph(model, x)
    removal, chosen = random_removal(g, frac, seed=seed)
    pruned = prune(model, removal, x, graph=g)
    assert rel_err(outputs(dead_copy(model, g, chosen), x), outputs(pruned, x)) <= 1e-5


def test_any_channel_of_a_block_names_the_whole_block():
    model, x = _make("coverage")
    g = DependencyGraph(model, x)
    (m,) = [p for p in g.group_of("c1").producers if p.module == "c1"]
    assert m.indices == [0, 4, 8, 12] and m.block == 4  # GroupNorm(4, 16): whole groups
    a = prune(model, {"c1": [5]}, x, graph=g)
    b = prune(model, {"c1": [4, 5, 6, 7]}, x, graph=g)
    assert a.c1.out_channels == b.c1.out_channels == 12 and a.gn1.num_groups == 3
    assert rel_err(outputs(a, x), outputs(b, x)) == 0


@pytest.mark.parametrize("name", ["coverage", "mobilenet_v2", "shufflenet"])
def test_group_removal_helper(name):
    model, x = _make(name)
    g = DependencyGraph(model, x)
    removal, chosen = {}, {}
    for grp in g.groups:
        if grp.prunable and not grp.touches_output:
            cs = list(range(0, grp.channels, 2))
            chosen[grp.id] = cs
            for k, v in grp.removal(cs).items():
                removal.setdefault(k, []).extend(v)
    pruned = prune(model, removal, x, graph=g)
    assert rel_err(outputs(dead_copy(model, g, chosen), x), outputs(pruned, x)) <= 1e-5
    with pytest.raises(ValueError, match="channels; got"):
        g.groups[0].removal([g.groups[0].channels])
