"""Learned importance weights, the options the paper's setup needs: per-layer normalised
thresholds, retraining between pruning steps, a non-zero fine-tuning default."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from _planted import chain_groups, make_task
from graph_util import one_thread
from fastprune.planning.tolerance import Tolerance
from fastprune.train.gates import Gates, gates_plan, init_gates, prune_with_gates, pruning_order
from fastprune.train.gates.select import select_by_gates

_threads = pytest.fixture(autouse=True)(one_thread)


def _two_layers(narrow: int = 4, wide: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, narrow, 3, padding=1), nn.BatchNorm2d(narrow), nn.ReLU(),
                         nn.Conv2d(narrow, wide, 3, padding=1), nn.BatchNorm2d(wide), nn.ReLU(),
                         nn.Conv2d(wide, 2, 1)).eval()


def test_layer_threshold_divides_by_each_layers_initial_rms():
    model = _two_layers()
    groups = chain_groups(model)
    g = Gates(model, groups, torch.zeros(1, 3, 8, 8), init="he", generator=torch.Generator().manual_seed(7))
    ref = torch.Generator().manual_seed(7)  # the same draws, made again: the oracle
    first, second = init_gates(4, "he", ref), init_gates(64, "he", ref)
    want = [first.abs() / first.pow(2).mean().sqrt(), second.abs() / second.pow(2).mean().sqrt()]
    for got, w in zip(g.scores(per_layer=True), want):
        torch.testing.assert_close(got, w)
    # raw He magnitudes are ~sqrt(2/64) in the wide layer against ~sqrt(2/4): a global threshold
    # takes its first 16 channels from the wide layer alone; the per-layer one from both
    assert {slot for slot, _ in pruning_order(g.scores())[:16]} == {1}
    assert {slot for slot, _ in pruning_order(g.scores(per_layer=True))[:16]} == {0, 1}
    ones = Gates(model, groups, torch.zeros(1, 3, 8, 8), init="ones")
    assert all(torch.equal(a, b) for a, b in zip(ones.scores(True), ones.scores()))
    g.detach()
    ones.detach()


def test_retraining_between_steps_reranks_and_undoes_a_failed_step():
    """A stand-in for training: after each step, `retrain` raises the gate of the channel that
    is currently weakest among the survivors of group 1, so the next step must re-rank. The
    value is the number of masked channels; the tolerance allows 3, so the step that reaches 4
    is undone: gates and weights as after the 3rd."""
    model = _two_layers(4, 6)
    g = Gates(model, chain_groups(model), torch.zeros(1, 3, 8, 8), init="uniform",
              generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        g.weights[0].copy_(torch.tensor([0.9, 0.8, 0.7, 0.6]))
        g.weights[1].copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.95]))
    calls, snapshots = [], []

    def retrain():
        alive = [c for c in range(6) if g.alive1[c] > 0]
        weakest = min(alive, key=lambda c: float(g.weights[1][c].detach()))
        with torch.no_grad():
            g.weights[1][weakest] += 1.0  # now the strongest: the next step must not take it
            model[0].bias += 1.0  # the model's weights change too
        calls.append(g.removed())
        snapshots.append((g.weights[1].detach().clone(), model[0].bias.detach().clone()))

    value = lambda: float(sum(int((getattr(g, f"alive{s}") == 0).sum()) for s in range(2)))  # noqa: E731
    sel = select_by_gates(g, value, 0.0, Tolerance(3.0), step=1, retrain=retrain)
    # step 1 removes channel 0 of group 1 (|g| 0.1); retraining lifts the weakest survivor (1: 0.2 -> 1.2);
    # step 2 then takes channel 2 (0.3), not 1; step 3 takes 4 (0.5) (3 was lifted); after that every
    # survivor of group 1 was lifted, so step 4 takes channel 3 of group 0 (0.6) and leaves the tolerance
    assert calls == [{1: [0]}, {1: [0, 2]}, {1: [0, 2, 4]}, {0: [3], 1: [0, 2, 4]}]
    assert sel.pruned == 3 and sel.values == [1.0, 2.0, 3.0, 4.0] and sel.value == 3.0
    assert g.removed() == {1: [0, 2, 4]}
    w, b = snapshots[2]
    torch.testing.assert_close(g.weights[1].detach(), w)
    torch.testing.assert_close(model[0].bias.detach(), b)
    g.detach()


def test_retraining_through_the_method_on_planted_redundancy():
    wide, _, train, val = make_task()
    plan = gates_plan(wide, train, val, 0.05, groups=chain_groups(wide), step=2, epochs=3, retrain_epochs=1,
                      threshold="layer", init="he", progress=False)
    assert plan.meta["retrain_epochs"] == 1 and plan.meta["threshold"] == "layer"
    assert len(plan.meta["values"]) == len(plan.meta["steps"]) >= 1
    with pytest.raises(ValueError, match="threshold must be one of"):
        gates_plan(wide, train, val, 0.05, groups=chain_groups(wide), threshold="per-channel", progress=False)
    with pytest.raises(ValueError, match="retrain_epochs"):
        gates_plan(wide, train, val, 0.05, groups=chain_groups(wide), retrain_epochs=-1, progress=False)


def test_the_method_fine_tunes_by_default():
    default = inspect.signature(prune_with_gates).parameters["finetune_epochs"].default
    assert default > 0
    wide, _, train, val = make_task()
    _, _, report = prune_with_gates(wide, train, val, 0.05, groups=chain_groups(wide), epochs=1, step=2,
                                    progress=False)
    assert len(report["finetune"]) == default + 1  # the value before, then after each epoch
    assert not math.isnan(report["final"])


def test_cli_rejects_a_negative_retrain_count(capsys):
    from fastprune.cli.main import main

    code = main(["plan", "--method", "gates", "--model", "unet:base_width=4,depth=2", "--train-data", "synthetic:n=2",
                 "--data", "synthetic:n=2", "--tolerance", "0.1", "--gate-retrain-epochs", "-1", "--out", "x.json"])
    err = capsys.readouterr().err
    assert code == 2 and "--gate-retrain-epochs >= 0" in err and err.count("\n") == 1
