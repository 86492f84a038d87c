"""Parameters and MACs against hand-computed counts."""
import pytest
import torch
from torch import nn

import fastprune
from fastprune.surgery import prune

from graph_util import n_params, one_thread
from zoo import ZOO

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
pytestmark = pytest.mark.filterwarnings("ignore:fastprune. modules with parameters that the example input does not reach")


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)           # 8x8 out
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8, bias=False)  # 4x4 out
        self.gn = nn.GroupNorm(4, 16)
        self.up = nn.ConvTranspose2d(16, 4, 2, 2)         # 4x4 in -> 8x8
        self.c1d = nn.Conv1d(4, 6, 3)                      # on (N, 4, 64) -> 62
        self.fc = nn.Linear(6 * 62, 5)
        self.ln = nn.LayerNorm(5)

    def forward(self, x):
        y = self.up(self.gn(self.dw(torch.relu(self.bn(self.c1(x))))))
        y = self.c1d(y.flatten(2))
        return self.ln(self.fc(y.flatten(1)))


def test_analytic_counts():
    n = 2
    c = fastprune.count(Small(), torch.randn(n, 3, 8, 8))
    want = {
        "c1": (8 * 3 * 9 + 8, n * 8 * 64 * 3 * 9),
        "bn": (16, 0),
        "dw": (16 * 9, n * 16 * 16 * 9),
        "gn": (32, 0),
        "up": (16 * 4 * 4 + 4, n * 16 * 16 * 4 * 4),
        "c1d": (6 * 4 * 3 + 6, n * 6 * 62 * 4 * 3),
        "fc": (5 * 372 + 5, n * 5 * 372),
        "ln": (10, 0),
    }
    assert c.per_layer == want
    assert c.params == sum(p for p, _ in want.values()) == n_params(Small())
    assert c.macs == sum(m for _, m in want.values())
    assert c.norm_macs == n * (8 * 64 + 16 * 16 + 5)


def test_resnet50_published_figure():
    from zoo import resnet50_like

    c = fastprune.count(resnet50_like(), torch.randn(1, 3, 224, 224))
    assert c.params == 25_557_032  # torchvision resnet50
    assert c.macs == 4_089_184_256  # the 4.09 GMACs quoted for ResNet-50

@pytest.mark.parametrize("name", sorted(ZOO))
def test_count_params_match_and_shrink(name):
    fac, shape = ZOO[name]
    m = fac().eval()
    x = torch.randn(shape)
    c = fastprune.count(m, x)
    assert c.params == n_params(m)
    assert sum(p for p, _ in c.per_layer.values()) == c.params
    g = fastprune.DependencyGraph(m, x)
    grp = next(gr for gr in g.groups if gr.prunable and not gr.touches_output)
    p = grp.producers[0]
    pruned = prune(m, {p.module: [p.indices[0]]}, x, graph=g)
    c2 = fastprune.count(pruned, x)
    assert c2.params == n_params(pruned) < c.params
    assert c2.macs < c.macs


def test_count_conv_macs_formula_matches_explicit_sum():
    # an independent oracle: MACs of a conv = number of products in an explicit im2col matmul
    conv = nn.Conv2d(6, 9, (3, 2), stride=(2, 1), padding=1, groups=3)
    x = torch.randn(2, 6, 7, 5)
    cols = torch.nn.functional.unfold(x, (3, 2), padding=1, stride=(2, 1))  # (N, C*k, L)
    L = cols.shape[-1]
    products = 2 * 9 * L * (6 // 3) * 3 * 2
    assert fastprune.count(conv, x).macs == products


def test_count_errors():
    with pytest.raises(ValueError, match="cannot count"):
        fastprune.count(nn.Linear(3, 2), torch.randn(2, 4))
    with pytest.raises(TypeError):
        fastprune.count(lambda x: x, torch.randn(1))
