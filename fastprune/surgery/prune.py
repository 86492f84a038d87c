"""Physical pruning: a new, smaller model with the removed channels gone."""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..graph.graph import DependencyGraph
from ..graph.trace import call_model, preserved_state
from ..planning.plan import Plan
from .edits import Edits, apply_edits, compute_edits, removed_classes

EDITS_ATTR = "_fastprune_edits"


def as_removal(removal: Plan | Mapping[str, Any]) -> dict[str, list[int]]:
    """A removal dict from a Plan or a dict {producer: indices}."""
    if isinstance(removal, Plan):
        return removal.removal()
    if not isinstance(removal, Mapping):
        raise TypeError(f"fastprune: removal must be a Plan or a dict {{producer name: indices}}, got {type(removal).__name__}")
    return {k: list(v) for k, v in removal.items()}


def plan_edits(model: nn.Module, removal: Plan | Mapping[str, Any], example_inputs: Any,
               allow_output: bool = False, graph: DependencyGraph | None = None) -> Edits:
    """Validated per-module edits for `removal` (nothing is changed)."""
    rem = as_removal(removal)
    graph = graph or DependencyGraph(model, example_inputs)
    if isinstance(removal, Plan):
        _check_plan_counts(removal, graph)
    removed = removed_classes(graph, rem, model, allow_output)
    return compute_edits(graph, removed, model)


def _check_plan_counts(plan: Plan, graph: DependencyGraph) -> None:
    for name, n in plan.channels.items():
        have = graph.producer_channels(name)
        if have != n:
            raise ValueError(f"fastprune: the plan says '{name}' has {n} output channels, the model has {have}")


def _shapes(out: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def prune(model: nn.Module, removal: Plan | Mapping[str, Any], example_inputs: Any, inplace: bool = False,
          allow_output: bool = False, graph: DependencyGraph | None = None, check: bool = True) -> nn.Module:
    """Remove output channels (and every channel coupled to them) physically.

    `removal` maps producer names (from `named_modules()`) to output-channel indices, or is a
    `Plan`. Returns a new model (the original is untouched unless `inplace`). With `check`,
    the pruned model is run once on the example input to prove it still works.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastprune: expected an nn.Module, got {type(model).__name__}")
    graph = graph or DependencyGraph(model, example_inputs)
    edits = plan_edits(model, removal, example_inputs, allow_output, graph)
    target = model if inplace else copy.deepcopy(model)
    apply_edits(target, edits)
    prev = getattr(model, EDITS_ATTR, None)
    setattr(target, EDITS_ATTR, _merge(prev, edits) if prev else edits)
    if check:
        _check_runs(graph.trace.output_shapes, target, example_inputs, allow_output)
    return target


def _merge(prev: Edits, new: Edits) -> list:
    """Edits applied one after another (pruning a pruned model)."""
    seq = prev if isinstance(prev, list) else [prev]
    return [*seq, new]


def _check_runs(ref: list[tuple[int, ...]], pruned: nn.Module, example_inputs: Any, allow_output: bool) -> None:
    try:
        with preserved_state(pruned), torch.no_grad():
            out = call_model(pruned, example_inputs)
    except Exception as exc:
        raise ValueError(
            f"fastprune: the pruned model no longer runs ({type(exc).__name__}: {exc}); its forward probably "
            "hard-codes a channel count"
        ) from exc
    if not allow_output and ref != _shapes(out):
        raise ValueError(f"fastprune: pruning changed the output shapes {ref} -> {_shapes(out)}")
