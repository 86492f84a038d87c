"""The shared error-tolerance rule: Tolerance.within and largest_within (linear and bisect)."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastprune.planning.tolerance import Tolerance, largest_within


def test_within_loss_absolute_and_relative():
    t = Tolerance(0.1)
    assert t.within(1.0, 1.1 - 1e-12)
    assert t.within(1.0, 0.5)  # improving is always within
    assert not t.within(1.0, 1.1 + 1e-9)
    r = Tolerance(0.1, relative=True)
    assert r.within(-2.0, -1.8 - 1e-12)  # |baseline| scales the allowance
    assert not r.within(-2.0, -1.8 + 1e-9)
    assert r.within(10.0, 11.0 - 1e-9) and not r.within(10.0, 11.0 + 1e-9)


def test_within_metric_higher_is_better():
    t = Tolerance(0.02, higher_is_better=True)
    assert t.within(0.80, 0.79)
    assert t.within(0.80, 0.95)
    assert not t.within(0.80, 0.77)
    r = Tolerance(0.05, relative=True, higher_is_better=True)
    assert r.within(0.8, 0.761) and not r.within(0.8, 0.759)


def test_zero_tolerance_allows_only_no_worsening():
    t = Tolerance(0.0)
    assert t.within(1.0, 1.0) and t.within(1.0, 0.99) and not t.within(1.0, 1.0 + 1e-12)


@pytest.mark.parametrize("eps", [-1e-9, -1.0, -math.inf])
def test_negative_epsilon_is_rejected(eps):
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        Tolerance(eps)


def test_bad_epsilon_types():
    with pytest.raises(ValueError, match="NaN"):
        Tolerance(float("nan"))
    with pytest.raises(TypeError, match="epsilon"):
        Tolerance("0.1")
    with pytest.raises(TypeError, match="epsilon"):
        Tolerance(True)


def test_nan_value_or_baseline_named():
    t = Tolerance(0.1)
    with pytest.raises(ValueError, match="value is NaN"):
        t.within(1.0, float("nan"))
    with pytest.raises(ValueError, match="baseline is NaN"):
        t.within(float("nan"), 1.0)
    with pytest.raises(ValueError, match="baseline is infinite"):
        t.within(math.inf, 1.0)
    assert not t.within(1.0, math.inf)  # a diverged loss is simply out of tolerance


def _oracle_last_within(values, baseline, eps, higher):
    """Last index of the prefix of values within eps (a plain loop, no Tolerance)."""
    last = -1
    for i, v in enumerate(values):
        worse = (baseline - v) if higher else (v - baseline)
        if worse > eps:
            break
        last = i
    return last


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=40),
    eps=st.floats(0.0, 5.0),
    higher=st.booleans(),
    mode=st.sampled_from(["linear", "bisect"]),
)
def test_largest_within_matches_oracle_on_monotone_sequences(steps, eps, higher, mode):
    baseline = 1.0
    acc, values = 0.0, []
    for s in steps:  # monotonically worsening values
        acc += s
        values.append(baseline - acc if higher else baseline + acc)
    calls = []

    def evaluate(i):
        calls.append(i)
        return values[i]

    idx, measured = largest_within(range(len(values)), evaluate, baseline, Tolerance(eps, higher_is_better=higher),
                                   mode=mode, progress=False)
    assert idx == _oracle_last_within(values, baseline, eps, higher)
    assert measured == [values[i] for i in calls]
    if mode == "linear":
        assert calls == list(range(min(len(values), idx + 2)))
    else:
        assert len(calls) <= max(1, math.ceil(math.log2(len(values) + 1))) if values else calls == []


def test_linear_stops_at_first_violation_even_if_later_recovers():
    values = [1.0, 1.05, 1.5, 1.0, 1.0]
    idx, measured = largest_within(values, lambda v: v, 1.0, Tolerance(0.1), mode="linear", progress=False)
    assert idx == 1 and measured == [1.0, 1.05, 1.5]


def test_none_within_and_empty():
    idx, measured = largest_within([2.0, 3.0], lambda v: v, 1.0, Tolerance(0.5), mode="linear", progress=False)
    assert idx == -1 and measured == [2.0]
    idx, measured = largest_within([2.0, 3.0], lambda v: v, 1.0, Tolerance(0.5), mode="bisect", progress=False)
    assert idx == -1
    assert largest_within([], lambda v: v, 1.0, Tolerance(0.5), progress=False) == (-1, [])


def test_nan_from_evaluate_names_candidate():
    with pytest.raises(ValueError, match="candidate 1 gave NaN"):
        largest_within([1.0, float("nan"), 1.0], lambda v: v, 1.0, Tolerance(0.5), mode="linear", progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown search mode"):
        largest_within([1.0], lambda v: v, 1.0, Tolerance(0.5), mode="golden", progress=False)
    with pytest.raises(TypeError, match="Tolerance"):
        largest_within([1.0], lambda v: v, 1.0, 0.5, progress=False)
    with pytest.raises(ValueError, match="baseline is NaN"):
        largest_within([1.0], lambda v: v, float("nan"), Tolerance(0.5), progress=False)
