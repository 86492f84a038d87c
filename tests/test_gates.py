"""Learned importance weights: initialisations, hooks, folding, ordering, bad input."""
import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from graph_util import one_thread  # noqa: E402
from _planted import chain_groups, make_task, member, remove_from_chain  # noqa: E402

from fastprune.planning.tolerance import Tolerance  # noqa: E402
from fastprune.train.gates import (  # noqa: E402
    INITS, Gates, gates_plan, init_gates, logistic_map, prune_with_gates, pruning_order, step_counts,
    validation_value)


_threads = pytest.fixture(autouse=True)(one_thread)  # tiny models: one thread is fastest and least noisy


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# --- initialisations --------------------------------------------------------------------------

def test_init_ones_uniform_xavier_ranges():
    g = torch.Generator().manual_seed(1)
    assert torch.equal(init_gates(7, "ones"), torch.ones(7))
    u = init_gates(4000, "uniform", g)
    assert u.min() >= 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.03
    n = 4000
    x = init_gates(n, "xavier", g)
    a = math.sqrt(3.0 / n)
    assert x.abs().max() <= a and x.abs().max() > 0.95 * a


@pytest.mark.parametrize("method,var", [("he", 2.0), ("lecun", 1.0)])
def test_init_fan_scaled_normals(method, var):
    n = 5000
    x = init_gates(n, method, torch.Generator().manual_seed(2)).double()
    assert abs(float(x.mean())) < 4 * math.sqrt(var / n) / math.sqrt(n)
    assert float(x.var()) == pytest.approx(var / n, rel=0.08)


@pytest.mark.parametrize("method,scale", [("he", 2.0), ("lecun", 1.0)])
def test_he_and_lecun_are_keras_truncated_normals(method, scale):
    """Keras's he_normal / lecun_normal: a normal cut at 2 of its standard deviations, widened
    so that the variance is scale / fan_in; oracle: scipy's truncated normal."""
    from scipy import stats

    n = 20000
    std = math.sqrt(scale / n) / stats.truncnorm(-2, 2).std()
    x = init_gates(n, method, torch.Generator().manual_seed(4)).double().numpy()
    # cut at 2 std (a plain normal of the same variance would reach ~4.3 of its std, 3.8 of these)
    assert abs(x).max() <= 2 * std * (1 + 1e-6) and abs(x).max() > 1.9 * std
    assert stats.kstest(x, stats.truncnorm(-2, 2, scale=std).cdf).pvalue > 1e-3
    assert float(x.var()) == pytest.approx(scale / n, rel=0.05)


def test_init_chaotic_is_the_logistic_map():
    g = torch.Generator().manual_seed(3)
    v = init_gates(50, "chaotic", g).double()
    x0 = 0.05 + 0.9 * float(torch.rand((), generator=torch.Generator().manual_seed(3)))
    x = x0
    for _ in range(16):
        x = 3.99 * x * (1 - x)
    ref = []
    for _ in range(50):
        x = 3.99 * x * (1 - x)
        ref.append(x)
    assert torch.allclose(v, torch.tensor(ref, dtype=torch.float64), atol=1e-6)
    assert ((v > 0) & (v < 1)).all()
    with pytest.raises(ValueError, match="x0"):
        logistic_map(3, 1.5)


def test_init_bad_method_and_size():
    with pytest.raises(ValueError, match="unknown gate initialisation"):
        init_gates(3, "normal")
    with pytest.raises(ValueError, match="at least one channel"):
        init_gates(0, "ones")


# --- hooks and folding --------------------------------------------------------------------------

def _chain_forward_reference(model, gates_per_layer, x):
    """conv-BN-(×gate)-ReLU chain computed with functional ops in float64 (the oracle)."""
    x = x.double()
    layers = list(model)
    for i in (0, 3):
        conv, bn = layers[i], layers[i + 1]
        x = F.conv2d(x, conv.weight.double(), None, padding=1)
        x = F.batch_norm(x, bn.running_mean.double(), bn.running_var.double(), bn.weight.double(), bn.bias.double(),
                         False, 0.0, bn.eps)
        x = F.relu(x * gates_per_layer[i // 3].double().view(1, -1, 1, 1))
    return F.conv2d(x, layers[6].weight.double(), layers[6].bias.double())


def test_ones_gates_leave_the_function_unchanged_and_detach_restores():
    wide, _, train, _ = make_task()
    x = train[0][0]
    ref = wide(x)
    g = Gates(wide, chain_groups(wide), x)
    assert [s.name for s in g.sites] == ["1", "4"]  # after the norms, not at the convs
    assert torch.equal(wide(x), ref)
    g.detach()
    assert not g.attached


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), init=st.sampled_from(INITS), frac=st.floats(0.0, 0.9))
def test_gated_masked_model_matches_reference_and_fold_is_exact(seed, init, frac):
    wide, _, train, _ = make_task(seed=seed % 7)
    x = train[0][0][:8]
    gen = torch.Generator().manual_seed(seed)
    g = Gates(wide, chain_groups(wide), x, init=init, generator=gen)
    removed = {s: [c for c in range(8) if torch.rand((), generator=gen) < frac] for s in (0, 1)}
    removed = {s: v[:7] for s, v in removed.items()}  # a group keeps one channel
    g.set_removed(removed)
    out = wide(x)
    ref = _chain_forward_reference(wide, [g.effective(0).detach(), g.effective(1).detach()], x)
    assert _rel(out.double(), ref) <= 1e-5
    removal = g.removal()
    assert removal == {name: sorted(removed[s]) for s, name in ((0, "0"), (1, "3")) if removed[s]}
    g.fold()
    folded = wide(x)
    assert _rel(folded.double(), out.double()) <= 1e-5  # no hook left, same function
    small = remove_from_chain(wide, removal)
    assert _rel(small(x).double(), out.double()) <= 1e-5


def test_fold_into_producers_without_norm_linear_and_transposed():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.ConvTranspose2d(3, 5, 2, stride=2), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1, bias=True),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(2, 3, 2, 2)
    groups = [
        SimpleNamespace(id=0, channels=list(range(5)), producers=[member("0", "conv_transpose", "out", range(5))],
                        members=[member("0", "conv_transpose", "out", range(5)), member("2", "conv", "in", range(5))],
                        prunable=True),
        SimpleNamespace(id=1, channels=list(range(4)), producers=[member("2", "conv", "out", range(4))],
                        members=[member("2", "conv", "out", range(4))], prunable=True),
        SimpleNamespace(id=2, channels=list(range(6)), producers=[member("5", "linear", "out", range(6))],
                        members=[member("5", "linear", "out", range(6)), member("7", "linear", "in", range(6))],
                        prunable=True),
        SimpleNamespace(id=3, channels=[], producers=[], members=[], prunable=False),
    ]
    g = Gates(seq, groups, x, init="he", generator=torch.Generator().manual_seed(5))
    assert sorted(s.name for s in g.sites) == ["0", "2", "5"]
    g.set_removed({0: [1], 2: [0, 3]})
    out = seq(x)
    g.detach()  # oracle: explicit forward, the gates multiplied at each producer's output by hand
    with torch.no_grad():
        e = [g.effective(i) for i in range(3)]
        h = F.relu(seq[0](x) * e[0].view(1, -1, 1, 1))
        h = F.relu(seq[2](h) * e[1].view(1, -1, 1, 1))
        h = F.relu(seq[5](h.flatten(1)) * e[2])
        ref = seq[7](h)
    g.attach()
    assert _rel(out, ref) <= 1e-5
    g.fold()
    assert _rel(seq(x), ref) <= 1e-5


class _Residual(nn.Module):
    """Two conv-BN branches added (coupled producers), then a consumer conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.Conv2d(3, 6, 1, bias=False)
        self.bna, self.bnb = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.bna(self.a(x)) + self.bnb(self.b(x))))


def test_coupled_producers_share_one_gate_per_channel():
    torch.manual_seed(0)
    m = _Residual()
    for bn in (m.bna, m.bnb):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    m.eval()
    ch = list(range(6))
    grp = SimpleNamespace(id=0, channels=ch, producers=[member("a", "conv", "out", ch), member("b", "conv", "out", ch)],
                          members=[member("a", "conv", "out", ch), member("b", "conv", "out", ch),
                                   member("bna", "batchnorm", "out", ch), member("bnb", "batchnorm", "out", ch),
                                   member("head", "conv", "in", ch)], prunable=True)
    x = torch.randn(2, 3, 5, 5)
    g = Gates(m, [grp], x, init="uniform", generator=torch.Generator().manual_seed(0))
    assert len(g.weights) == 1 and sorted(s.name for s in g.sites) == ["bna", "bnb"]
    g.set_removed({0: [2, 4]})
    g.detach()  # oracle without hooks: the shared gate scales the sum of both branches
    with torch.no_grad():
        e = g.effective(0).view(1, -1, 1, 1)
        ref = m.head(F.relu(e * (m.bna(m.a(x)) + m.bnb(m.b(x)))))
    g.attach()
    assert _rel(m(x), ref) <= 1e-5
    assert g.removal() == {"a": [2, 4], "b": [2, 4]}
    g.fold()
    assert _rel(m(x), ref) <= 1e-5


# --- the loop's order -------------------------------------------------------------------------

def test_pruning_order_respects_min_keep_and_sorts_by_magnitude():
    scores = [torch.tensor([0.5, 0.1, 0.9]), torch.tensor([0.05, 0.2])]
    assert pruning_order(scores) == [(1, 0), (0, 1), (0, 0)]
    assert pruning_order(scores, min_keep=2) == [(0, 1)]
    with pytest.raises(ValueError, match="min_keep"):
        pruning_order(scores, min_keep=0)


def test_step_counts():
    assert step_counts(10, 3) == [3, 6, 9, 10]
    assert step_counts(10, 0.5) == [5, 10]
    assert step_counts(4, 0.01) == [1, 2, 3, 4]
    assert step_counts(0, 1) == []
    with pytest.raises(ValueError):
        step_counts(10, 0)
    with pytest.raises(ValueError):
        step_counts(10, 1.5)
    with pytest.raises(TypeError):
        step_counts(10, "2")


# --- bad input: clear errors, nothing changed -------------------------------------------------

def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_negative_epsilon_is_rejected_before_any_work():
    wide, _, train, val = make_task()
    before = _state(wide)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        prune_with_gates(wide, train, val, -0.1, groups=chain_groups(wide), progress=False)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        prune_with_gates(wide, train, val, Tolerance(-0.1, relative=True), groups=chain_groups(wide),
                         progress=False)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        gates_plan(wide, train, val, -1e-3, groups=chain_groups(wide), progress=False)
    assert _same(before, _state(wide))


def test_no_prunable_layer_is_an_error():
    wide, _, train, val = make_task()
    groups = chain_groups(wide)
    for grp in groups:
        grp.prunable = False
    before = _state(wide)
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune_with_gates(wide, train, val, 0.1, groups=groups, progress=False)
    with pytest.raises(ValueError, match="no prunable channel group"):
        gates_plan(wide, train, val, 0.1, groups=[], progress=False)
    assert _same(before, _state(wide))


def test_nan_validation_set_is_an_error():
    wide, _, train, val = make_task()
    bad = [(x.clone(), y) for x, y in val]
    bad[1][0][0, 0, 0, 0] = float("nan")
    before = _state(wide)
    with pytest.raises(ValueError, match="validation loss is NaN"):
        prune_with_gates(wide, train, bad, 0.1, groups=chain_groups(wide), progress=False)
    with pytest.raises(ValueError, match="evaluate callable returned NaN"):
        validation_value(wide, val, evaluate=lambda m: float("nan"))
    with pytest.raises(ValueError, match="validation set is empty"):
        validation_value(wide, [])
    assert _same(before, _state(wide))


def test_other_bad_arguments():
    wide, _, train, val = make_task()
    groups = chain_groups(wide)
    with pytest.raises(ValueError, match="unknown gate initialisation"):
        gates_plan(wide, train, val, 0.1, init="zeros", groups=groups, progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        gates_plan(wide, iter(train), val, 0.1, groups=groups, progress=False)
    with pytest.raises(TypeError, match="unexpected arguments"):
        gates_plan(wide, train, val, 0.1, groups=groups, finetune_epochs=3)
    bad = copy.deepcopy(groups)
    bad[0].producers[0].module = "nope"
    with pytest.raises(ValueError, match="does not have"):
        Gates(wide, bad, train[0][0])


def test_block_members_share_one_gate_per_block():
    """A GroupNorm couples channels in blocks: one gate scales a whole block (positions indices[i] + 0..block-1)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    blk = dict(dim="out", indices=[0, 2], block=2)
    grp = SimpleNamespace(id=0, channels=2, prunable=True, touches_output=False,
                          producers=[SimpleNamespace(module="0", kind="conv", **blk)],
                          members=[SimpleNamespace(module="0", kind="conv", **blk),
                                   SimpleNamespace(module="1", kind="groupnorm", **blk)])
    x = torch.randn(2, 3, 5, 5)
    g = Gates(m, [grp], x, init="uniform", generator=torch.Generator().manual_seed(1))
    assert [s.name for s in g.sites] == ["1"]
    out = m(x)
    g.detach()
    with torch.no_grad():
        e = g.effective(0).repeat_interleave(2).view(1, -1, 1, 1)
        ref = m[3](F.relu(m[1](m[0](x)) * e))
    g.attach()
    assert _rel(out, ref) <= 1e-5
    g.fold()
    assert _rel(m(x), ref) <= 1e-5
