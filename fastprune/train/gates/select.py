"""The gates pruning loop: raise a threshold on |gate| step by step while the loss stays within ε."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...planning.tolerance import Tolerance, largest_within
from .attach import Gates


THRESHOLDS = ("global", "layer")


def pruning_order(scores: list[torch.Tensor], min_keep: int = 1,
                  removed: dict[int, list[int]] | None = None) -> list[tuple[int, int]]:
    """(group slot, channel) pairs in ascending |gate|, leaving each group at least `min_keep` channels.

    Ties break by (slot, channel) so the order is deterministic. A threshold t on |gate|
    corresponds to a prefix of this order. Channels in `removed` ({slot: channels}) are
    already gone: they are left out and count against their group's `min_keep`.
    """
    if min_keep < 1:
        raise ValueError(f"fastprune: min_keep must be >= 1 (a group cannot lose every channel), got {min_keep}")
    removed = removed or {}
    gone = {(slot, c) for slot, cs in removed.items() for c in cs}
    flat = [(float(s[c]), slot, c) for slot, s in enumerate(scores) for c in range(s.numel()) if (slot, c) not in gone]
    flat.sort()
    budget = [max(0, s.numel() - min_keep - len(removed.get(slot, ()))) for slot, s in enumerate(scores)]
    order = []
    for _, slot, c in flat:
        if budget[slot] > 0:
            budget[slot] -= 1
            order.append((slot, c))
    return order


def step_counts(total: int, step: int | float) -> list[int]:
    """Cumulative numbers of pruned channels per step: `step` channels (int) or that fraction of `total` (float)."""
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"fastprune: step must be an int (channels) or a float (fraction), got {type(step).__name__}")
    if isinstance(step, float):
        if not 0.0 < step <= 1.0:
            raise ValueError(f"fastprune: a fractional step must lie in (0, 1], got {step}")
        size = max(1, round(step * total))
    else:
        if step < 1:
            raise ValueError(f"fastprune: step must be >= 1 channel, got {step}")
        size = step
    counts = list(range(size, total + 1, size))
    if total and (not counts or counts[-1] != total):
        counts.append(total)
    return counts


def _as_removed(order: list[tuple[int, int]], k: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for slot, c in order[:k]:
        out.setdefault(slot, []).append(c)
    return out


@dataclass
class Selection:
    """Outcome of the loop: how many channels were pruned and what was measured at each step."""

    pruned: int
    value: float | None  # measured value of the selected candidate (None: nothing within tolerance)
    counts: list[int]
    values: list[float]
    thresholds: list[float]


def select_by_gates(gates: Gates, value: Callable[[], float], baseline: float, tolerance: Tolerance, *,
                    step: int | float = 1, min_keep: int = 1, progress: bool = True,
                    mask: Callable[[dict[str, list[int]]], Any] | None = None, threshold: str = "global",
                    retrain: Callable[[], Any] | None = None) -> Selection:
    """Mask channels in ascending |gate|, `step` at a time, until `value()` leaves the tolerance.

    `value()` measures the (masked, gated) model on the validation data. A masked channel's
    gate is 0; `mask(removal)`, if given, additionally installs hooks that make the removed
    channels exactly dead the way surgery would (`fastprune.surgery.masked`; it returns a
    handle with `.remove()`), which matters where an activation maps 0 to non-zero. On return
    the gates mask the last candidate that was within tolerance (nothing if none was).

    `threshold="layer"` ranks by |gate| over the group's initial gate RMS (`Gates.scores`):
    with He/LeCun/Xavier gates, whose initial magnitudes scale with 1/sqrt(group size), one
    global threshold on raw |gate| would empty the widest layers first. `retrain()`, if given,
    trains between steps (after masking, before measuring): the channels of each step are then
    the lowest-ranked of the retrained gates, and a step that leaves the tolerance is undone,
    gates and model weights restored to the last step within it.
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"fastprune: threshold must be one of {THRESHOLDS}, got {threshold!r}")
    per_layer = threshold == "layer"

    def measure(removed: dict[int, list[int]]) -> float:
        gates.set_removed(removed)
        handle = mask(gates.removal()) if mask is not None and removed else None
        try:
            return value()
        finally:
            if handle is not None:
                handle.remove()

    if retrain is not None:
        return _select_retraining(gates, measure, baseline, tolerance, step, min_keep, per_layer, retrain)
    scores = gates.scores(per_layer)
    order = pruning_order(scores, min_keep)
    counts = step_counts(len(order), step)
    idx, values = largest_within(counts, lambda k: measure(_as_removed(order, k)), baseline, tolerance,
                                 mode="linear", progress=progress)
    pruned = counts[idx] if idx >= 0 else 0
    gates.set_removed(_as_removed(order, pruned))
    thresholds = [float(scores[order[k - 1][0]][order[k - 1][1]]) for k in counts[:len(values)]]
    return Selection(pruned=pruned, value=values[idx] if idx >= 0 else None, counts=counts[:len(values)],
                     values=values, thresholds=thresholds)


def _select_retraining(gates: Gates, measure: Callable[[dict[int, list[int]]], float], baseline: float,
                       tolerance: Tolerance, step: int | float, min_keep: int, per_layer: bool,
                       retrain: Callable[[], Any]) -> Selection:
    """The loop with retraining between steps: re-rank the remaining channels after each retrain."""
    model = gates._model[0]
    counts = step_counts(len(pruning_order(gates.scores(per_layer), min_keep)), step)
    removed: dict[int, list[int]] = {}
    accepted = (0, None, {}, copy.deepcopy(gates.state_dict()), copy.deepcopy(model.state_dict()))
    done, values, thresholds = [], [], []
    for k in counts:
        scores = gates.scores(per_layer)
        have = sum(len(v) for v in removed.values())
        new = pruning_order(scores, min_keep, removed)[:k - have]
        for slot, c in new:
            removed.setdefault(slot, []).append(c)
        gates.set_removed(removed)
        retrain()
        v = measure(removed)
        done.append(k)
        values.append(v)
        thresholds.append(float(scores[new[-1][0]][new[-1][1]]))
        if not tolerance.within(baseline, v):
            break
        accepted = (k, v, copy.deepcopy(removed), copy.deepcopy(gates.state_dict()), copy.deepcopy(model.state_dict()))
    pruned, value, kept_removed, gate_state, model_state = accepted
    gates.load_state_dict(gate_state)
    model.load_state_dict(model_state)
    gates.set_removed(kept_removed)
    return Selection(pruned=pruned, value=value, counts=done, values=values, thresholds=thresholds)
