"""DependencyGraph(trace_size=...): the graph traced on a window of the example equals the graph
of the whole example (collect traces a 64 x 64 window: a 512 x 512 trace costs a forward pass)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastprune.graph import DependencyGraph
from fastprune.graph.trace import spatial_window
from fastprune.models import registry

from zoo import ZOO


def same_graph(a: DependencyGraph, b: DependencyGraph) -> None:
    assert a.fingerprint() == b.fingerprint()
    assert [g.structure() for g in a.groups] == [g.structure() for g in b.groups]
    assert [g.prunable for g in a.groups] == [g.prunable for g in b.groups]
    assert a.unreached == b.unreached


@pytest.mark.parametrize("name", registry.names())
def test_registry_models_window_graph_equals_whole(name):
    torch.manual_seed(0)
    model = registry.create(name, **({"backbone": "resnet18"} if name == "deeplabv3plus" else {})).eval()
    x = torch.randn(1, 3, 128, 96)
    same_graph(DependencyGraph(model, x, trace_size=32), DependencyGraph(model, x))


@pytest.mark.parametrize("name", [n for n in ZOO if ZOO[n][1][-1] >= 16])
def test_zoo_models_on_larger_maps(name):
    factory, shape = ZOO[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(*shape[:-2], shape[-2] * 4, shape[-1] * 4)
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError:
        pytest.skip("the model needs its example's map size")
    same_graph(DependencyGraph(model, x, trace_size=shape[-1]), DependencyGraph(model, x))


class Flat(nn.Module):
    """A Linear over flattened maps: the window's channel x spatial block differs, so its forward
    fails on the window and the whole example is traced."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 96 * 96, 2)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_models_that_need_the_whole_map_fall_back_to_it():
    model, x = Flat().eval(), torch.randn(1, 3, 96, 96)
    g = DependencyGraph(model, x, trace_size=32)
    same_graph(g, DependencyGraph(model, x))
    assert g.trace.output_shapes == [(1, 2)]


def test_window_cuts_only_large_4d_tensors():
    x, small, v = torch.randn(1, 3, 100, 80), torch.randn(1, 3, 40, 40), torch.randn(5, 100)
    assert spatial_window(x, 64).shape == (1, 3, 64, 64)
    assert spatial_window(small, 64) is small and spatial_window(v, 64) is v
    both = spatial_window((x, small), 64)
    assert both[0].shape == (1, 3, 64, 64) and both[1] is small
    assert spatial_window({"a": x}, 64)["a"].shape == (1, 3, 64, 64)
    same = (small, v)
    assert spatial_window(same, 64) is same
