"""`fastprune.train.gates.gates_plan`: the learned-importance planner's own entry point (the CLI's
`plan --method gates`).

Oracle: the planted redundant filters of tests/_planted.py (known by construction), found
through the real dependency graph, and the tolerance checked on the pruned model.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _planted import REDUNDANT, make_task, val_loss  # noqa: E402
from graph_util import one_thread  # noqa: E402

import fastprune  # noqa: E402
from fastprune.planning import Tolerance  # noqa: E402
from fastprune.train.gates import gates_plan  # noqa: E402


_threads = pytest.fixture(autouse=True)(one_thread)


def test_plan_method_gates_finds_planted_filters_within_tolerance():
    wide, _, train, val = make_task()
    baseline = val_loss(wide, val)
    x = train[0][0]
    plan = gates_plan(wide, train, val, Tolerance(0.01), "ones", example_inputs=x, epochs=20, lr=0.05, l1=2e-3,
                      step=1, fold=True, progress=False)
    assert plan.meta["method"] == "gates"
    assert sorted(plan.removal()) == ["0", "3"]
    assert all(idx == REDUNDANT for idx in plan.removal().values())
    small = fastprune.prune(wide, plan, x)
    assert val_loss(small, val) - baseline <= 0.01
