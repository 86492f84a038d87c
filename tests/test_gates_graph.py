"""Gates on real dependency graphs: folding + removal by surgery equals the masked gated model.

Oracle: the gated model with removed channels masked (gates at 0 plus surgery's exact
masking hooks) run before any folding; compared with the folded, physically pruned model.
"""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._pytree import tree_flatten

pytest.importorskip("fastprune.graph", reason="needs the dependency graph (branch graph)")
pytest.importorskip("fastprune.surgery", reason="needs the surgery layer (branch graph)")

import fastprune  # noqa: E402
from fastprune.surgery import masked  # noqa: E402
from fastprune.train.gates import Gates, gates_plan, prune_with_gates  # noqa: E402
from fastprune.train.gates.attach import gateable, group_size  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from graph_util import one_thread  # noqa: E402


_threads = pytest.fixture(autouse=True)(one_thread)  # tiny models: one thread is fastest and least noisy


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.Conv2d(3, 6, 1, bias=False)
        self.bna, self.bnb = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
        self.c = nn.Conv2d(6, 5, 3, padding=1)
        self.up = nn.ConvTranspose2d(5, 4, 2, stride=2)
        self.head = nn.Conv2d(4 + 6, 2, 1)

    def forward(self, x):
        s = F.relu(self.bna(self.a(x)) + self.bnb(self.b(x)))
        u = self.up(torch.sigmoid(self.c(F.max_pool2d(s, 2))))  # sigmoid(0) != 0: needs exact masking
        return self.head(torch.cat([u, s], 1))


def _models():
    out = {"residual_concat": (_Residual, (2, 3, 8, 8))}
    try:
        from zoo import ZOO  # the graph helper's architecture zoo, once merged
    except ImportError:
        return out
    out.update(ZOO)
    return out


MODELS = _models()


def _randomise(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
            if m.weight is not None:
                m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.3


def _flat(out):
    return [t for t in tree_flatten(out)[0] if torch.is_tensor(t)]


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_fold_and_prune_equal_the_masked_gated_model(name):
    factory, shape = MODELS[name]
    g = torch.Generator().manual_seed(0)
    model = factory().eval()
    _randomise(model, g)
    x = torch.randn(shape, generator=g)
    graph = fastprune.DependencyGraph(model, x)
    if not any(gateable(grp) for grp in graph.groups):
        pytest.skip(f"{name}: no prunable group")
    gates = Gates(model, graph.groups, x, init="uniform", generator=g)
    removed = {}
    for slot, grp in enumerate(gates.groups):
        n = group_size(grp)
        k = int(torch.randint(0, n, (), generator=g))  # 0..n-1 channels, at least one stays
        removed[slot] = torch.randperm(n, generator=g)[:k].tolist()
    gates.set_removed(removed)
    removal = gates.removal()
    with masked(model, removal, x, graph=graph):
        ref = _flat(model(x))
    gates.fold()
    pruned = fastprune.prune(model, removal, x)
    out = _flat(pruned(x))
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * max(float(b.abs().max()), 1e-6)


def test_no_prunable_layer_with_the_real_graph():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))  # its only channels are the output
    data = [(torch.randn(2, 3, 4, 4), torch.randint(0, 4, (2, 4, 4)))]
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune_with_gates(model, data, data, 0.1, progress=False)
    with pytest.raises(ValueError, match="no prunable channel group"):
        gates_plan(model, data, data, 0.1, progress=False)
