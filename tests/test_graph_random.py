"""Random architectures (hypothesis): pruning equals making the channels dead, whatever the wiring."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from fastprune.graph import DependencyGraph
from fastprune.surgery import masked, prune

from graph_util import dead_copy, n_params, one_thread, outputs, random_removal, rel_err

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)

OPS = ["conv", "conv_gn", "depthwise", "residual", "concat_prev", "chunk", "se", "pool_unpool", "resample", "mul_branch"]


class RandomNet(nn.Module):
    """A chain of randomly chosen blocks; every block keeps a channel count it records."""

    def __init__(self, ops: list[str], widths: list[int]) -> None:
        super().__init__()
        self.ops = ops
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList()
        c, prev = 8, 8
        for op, w in zip(ops, widths):
            b = nn.Module()
            if op in ("conv", "conv_gn"):
                b.conv = nn.Conv2d(c, w, 3, padding=1, bias=False)
                b.norm = nn.BatchNorm2d(w) if op == "conv" else nn.GroupNorm(2, w)
                prev, c = c, w
            elif op == "depthwise":
                b.conv = nn.Conv2d(c, c, 3, padding=1, groups=c)
                b.norm = nn.BatchNorm2d(c)
            elif op in ("residual", "mul_branch"):
                b.conv = nn.Conv2d(c, c, 1)
            elif op == "concat_prev":
                b.conv = nn.Conv2d(c, w, 1)
                prev, c = c, c + w
            elif op == "chunk":
                b.a = nn.Conv2d(c // 2, w, 1)
                b.b = nn.Conv2d(c - c // 2, w, 3, padding=1)
                prev, c = c, 2 * w
            elif op == "se":
                b.fc1 = nn.Conv2d(c, 2, 1)
                b.fc2 = nn.Conv2d(2, c, 1)
            elif op == "pool_unpool":
                b.conv = nn.Conv2d(c, c, 3, padding=1)
            self.blocks.append(b)
        self.head = nn.Conv2d(c, 3, 1)
        self.fc = nn.Linear(c * 4, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for op, b in zip(self.ops, self.blocks):
            if op in ("conv", "conv_gn", "depthwise"):
                x = F.relu(b.norm(b.conv(x)))
            elif op == "residual":
                x = x + F.relu(b.conv(x))
            elif op == "mul_branch":
                x = x * torch.tanh(b.conv(x)) - x
            elif op == "concat_prev":
                x = torch.cat([x, F.relu(b.conv(x))], 1)
            elif op == "chunk":
                p, q = torch.chunk(x, 2, 1)
                x = torch.cat([F.relu(b.a(p)), F.relu(b.b(q))], 1)
            elif op == "se":
                x = x * torch.sigmoid(b.fc2(F.relu(b.fc1(x.mean((2, 3), keepdim=True)))))
            elif op == "pool_unpool":
                y, i = F.max_pool2d(x, 2, return_indices=True)
                x = F.max_unpool2d(F.relu(b.conv(y)), i, 2)
            elif op == "resample":
                x = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(x), self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=6), widths=st.lists(st.sampled_from([4, 6, 8]), min_size=6, max_size=6),
       seed=st.integers(0, 1000), frac=st.floats(0.1, 0.9))
def test_random_architectures(ops, widths, seed, frac):
    if "chunk" in ops:  # chunk needs an even channel count at its input
        widths = [w if w % 2 == 0 else w + 1 for w in widths]
    torch.manual_seed(seed)
    m = RandomNet(ops, widths).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2)
            mod.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 8, 8)
    g = DependencyGraph(m, x)
    removal, chosen = random_removal(g, frac, seed=seed)
    if not removal:
        return
    p = prune(m, removal, x, graph=g)
    assert n_params(p) < n_params(m)
    assert rel_err(outputs(dead_copy(m, g, chosen), x), outputs(p, x)) <= 1e-5
    with masked(m, removal, x, graph=g):
        got = outputs(m, x)
    assert rel_err(got, outputs(p, x)) <= 1e-5
