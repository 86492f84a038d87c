"""One cost model: the plan's predicted params/MACs equal `fastprune.count` of the pruned model
(flatten -> Linear, concatenation, depthwise and transposed convolutions, every tests/zoo.py
model), and NCI through a flattened Linear matches an explicit per-feature computation."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastprune
from fastprune import criteria
from fastprune.criteria import GroupContext
from fastprune.graph.cost import ChannelCost
from fastprune.planning import Ratio, plan

from graph_util import one_thread, zoo_statistics
from zoo import ZOO

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
pytestmark = pytest.mark.filterwarnings("ignore:fastprune. modules with parameters that the example input does not reach")


class Flat(nn.Module):
    """conv -> flatten -> Linear: each conv channel is a block of 16 Linear input features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, stride=2)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def _data(shape, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def _predicted_equals_counted(model, stats, x, method="l1", rule=Ratio(0.5)):
    p = plan(model, stats, method, rule)
    pruned = fastprune.prune(copy.deepcopy(model), p, x)
    c = fastprune.count(pruned, x)
    assert (p.meta["params_after"], p.meta["macs_after"]) == (c.params, c.macs)
    assert p.meta["params_after"] < p.meta["params_before"]
    return p


def test_flatten_linear_plan_cost_equals_count():
    torch.manual_seed(0)
    model = Flat().eval()
    stats = fastprune.collect(model, _data((4, 3, 8, 8)), progress=False)
    p = _predicted_equals_counted(model, stats, stats.example_inputs(model))
    assert len(p.keep["conv"]) == 3


def test_flatten_linear_nci_is_the_per_feature_energy():
    torch.manual_seed(0)
    model = Flat().eval()
    data = _data((4, 3, 8, 8))
    stats = fastprune.collect(model, data, progress=False)
    gid = stats.group_of("conv")
    got = criteria.get("nci").scores(GroupContext(model, stats, gid))
    with torch.no_grad():
        feats = torch.cat([torch.relu(model.conv(x)).flatten(1) for x in data]).double()  # (N, 96)
    w = model.fc.weight.detach().double()
    per_feature = feats.square().sum(0) * w.square().sum(0)                  # sum_n x_f^2 * ||W[:, f]||^2
    want = per_feature.reshape(6, 16).sum(1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    first_column_only = (feats[:, ::16].square().sum(0) * w[:, ::16].square().sum(0)).numpy()
    assert not np.allclose(got, first_column_only, rtol=1e-2)  # the old bug would pass this


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_plan_cost_equals_count(name):
    model, stats = zoo_statistics(name, torch.randn)
    _predicted_equals_counted(model, stats, stats.example_inputs(model))


def test_channel_cost_is_exact_for_each_group_alone():
    # every prunable group of a concat / depthwise / transposed-conv model, one at a time
    from zoo import ZOO as Z
    for name in ("unet", "mobilenet_v2", "densenet", "segnet"):
        fac, shape = Z[name]
        model = fac().eval()
        x = torch.randn(shape)
        g = fastprune.DependencyGraph(model, x)
        cost = ChannelCost(model, x, {str(gr.id): gr.members for gr in g.groups})
        for gr in g.groups:
            if not gr.prunable or gr.touches_output:
                continue
            r = max(1, gr.channels // 3)
            pruned = fastprune.prune(model, gr.removal(list(range(r))), x, graph=g)
            c = fastprune.count(pruned, x)
            assert cost.evaluate({str(gr.id): r}) == (c.params, c.macs), (name, gr.id)
