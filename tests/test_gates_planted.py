"""The gates method on a task with planted redundancy (duplicated and dead filters).

Oracle: the redundant channels are known by construction (tests/_planted.py); removal is
checked against explicit slicing of the chain, independent of fastprune.surgery.
"""
import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from graph_util import one_thread  # noqa: E402
from _planted import REDUNDANT, chain_groups, make_task, remove_from_chain, val_loss  # noqa: E402

from fastprune.planning.tolerance import Tolerance  # noqa: E402
from fastprune.train.gates import (  # noqa: E402
    Gates, finetune, gates_plan, prune_with_gates, select_by_gates, train_gates)

EPS_GRID = [0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
TRAIN = dict(epochs=20, lr=0.05, l1=2e-3)


_threads = pytest.fixture(autouse=True)(one_thread)  # tiny models: one thread is fastest and least noisy


@pytest.fixture(scope="module")
def trained():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    wide, teacher, train, val = make_task()
    baseline = val_loss(wide, val)
    gates = Gates(wide, chain_groups(wide), train[0][0])
    train_gates(wide, gates, train, progress=False, **TRAIN)
    torch.set_num_threads(n)
    return wide, teacher, train, val, baseline, gates


def _agreement(teacher, val):
    """Pixel agreement with the teacher's argmax: a metric where higher is better."""
    def evaluate(model):
        with torch.no_grad():
            model.eval()
            hits = sum(float((model(x).argmax(1) == teacher(x).argmax(1)).sum()) for x, _ in val)
            return hits / sum(x.shape[0] * x.shape[2] * x.shape[3] for x, _ in val)
    return evaluate


def test_gates_find_the_planted_redundancy(trained):
    wide, _, _, val, baseline, gates = trained
    eps = 0.01
    sel = select_by_gates(gates, lambda: val_loss(wide, val), baseline, Tolerance(eps), step=1, progress=False)
    assert gates.removed() == {0: REDUNDANT, 1: REDUNDANT}
    assert sel.pruned == 8 and sel.values[-1] - baseline > eps  # stopped at the first real filter
    masked = val_loss(wide, val)
    assert masked - baseline <= eps
    folded = copy.deepcopy(wide)
    g2 = Gates(folded, chain_groups(folded), val[0][0])
    g2.load_state_dict(gates.state_dict())
    g2.fold()
    small = remove_from_chain(folded, g2.removal())
    assert [small[0].out_channels, small[3].out_channels] == [4, 4]
    x = val[0][0]
    ref = wide(x)
    with torch.no_grad():
        assert float((small(x) - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert val_loss(small, val) - baseline <= eps


def test_tighter_epsilon_prunes_less(trained):
    wide, _, _, val, baseline, gates = trained
    pruned = []
    for eps in EPS_GRID:
        sel = select_by_gates(gates, lambda: val_loss(wide, val), baseline, Tolerance(eps), step=1, progress=False)
        pruned.append(sel.pruned)
        # the masked model the loop selects is within ε; with nothing within, the method keeps the original
        assert sel.pruned == 0 or val_loss(wide, val) - baseline <= eps
    assert pruned == sorted(pruned)
    assert pruned[0] < 8 <= pruned[2] < pruned[-1]  # the grid really spans different outcomes


def test_relative_tolerance_and_metric_tolerance(trained):
    wide, teacher, _, val, baseline, gates = trained
    select_by_gates(gates, lambda: val_loss(wide, val), baseline, Tolerance(0.01, relative=True), step=2,
                    progress=False)
    assert gates.removed() == {0: REDUNDANT, 1: REDUNDANT}
    metric = _agreement(teacher, val)
    gates.detach()
    base_metric = metric(wide)
    gates.attach()
    assert base_metric == 1.0
    tol = Tolerance(0.02, higher_is_better=True)  # 2 points of pixel agreement
    select_by_gates(gates, lambda: metric(wide), base_metric, tol, step=1, progress=False)
    assert gates.removed() == {0: REDUNDANT, 1: REDUNDANT}
    assert tol.within(base_metric, metric(wide))


def test_gates_plan_end_to_end_with_folding():
    wide, _, train, val = make_task()
    baseline = val_loss(wide, val)
    before = copy.deepcopy(wide)
    plan = gates_plan(wide, train, val, 0.01, groups=chain_groups(wide), step=1, progress=False, **TRAIN)
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), wide.state_dict().values()))
    assert plan.removal() == {"0": REDUNDANT, "3": REDUNDANT}
    assert plan.channels == {"0": 8, "3": 8} and plan.meta["method"] == "gates"
    assert plan.meta["baseline"] == pytest.approx(baseline)
    assert plan.from_json(plan.to_json()).keep == plan.keep
    plan2 = gates_plan(wide, train, val, 0.01, groups=chain_groups(wide), step=1, progress=False, fold=True,
                       **TRAIN)
    assert plan2.keep == plan.keep
    small = remove_from_chain(wide, plan2.removal())
    assert val_loss(small, val) - baseline <= 0.01


def test_joint_training_and_finetune_never_worse():
    wide, _, train, val = make_task()
    baseline = val_loss(wide, val)
    plan = gates_plan(wide, train, val, Tolerance(0.05), groups=chain_groups(wide), init="chaotic",
                      train_base=True, epochs=15, l1=2e-3, step=1, progress=False)
    if plan.meta["pruned_channels"]:
        assert plan.meta["selected_value"] - baseline <= 0.05
        assert sum(len(v) for v in plan.removal().values()) == plan.meta["pruned_channels"]
    start = val_loss(wide, val)
    best, history = finetune(wide, train, val, epochs=2, lr=1e-3, progress=False)
    assert history[0] == pytest.approx(start) and best == min(history)
    assert val_loss(wide, val) == pytest.approx(best, rel=1e-6)


def _check_pruned(model, plan, report, val, baseline, eps):
    assert report["baseline"] == pytest.approx(baseline)
    assert report["pruned"] == pytest.approx(report["selected"], rel=1e-5)  # removal = what the loop measured
    assert report["pruned"] - baseline <= eps and report["final"] <= report["pruned"] + 1e-12
    assert report["within_tolerance"]
    assert set(plan.removal()) == {"0", "3"} and all(set(REDUNDANT) <= set(v) for v in plan.removal().values())
    assert val_loss(model, val) == pytest.approx(report["final"], rel=1e-6)


def test_prune_with_gates_with_surgery():
    pytest.importorskip("fastprune.surgery", reason="needs the surgery layer (branch graph)")
    wide, _, train, val = make_task()
    baseline = val_loss(wide, val)
    model, plan, report = prune_with_gates(wide, train, val, 0.01, groups=chain_groups(wide), step=1,
                                           finetune_epochs=2, progress=False, **TRAIN)
    _check_pruned(model, plan, report, val, baseline, 0.01)


def test_prune_with_gates_with_dependency_graph():
    pytest.importorskip("fastprune.graph", reason="needs the dependency graph (branch graph)")
    pytest.importorskip("fastprune.surgery", reason="needs the surgery layer (branch graph)")
    wide, _, train, val = make_task()
    baseline = val_loss(wide, val)
    model, plan, report = prune_with_gates(wide, train, val, 0.01, step=1, progress=False, **TRAIN)
    _check_pruned(model, plan, report, val, baseline, 0.01)
