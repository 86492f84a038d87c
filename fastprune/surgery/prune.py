"""Physical pruning: a new, smaller model with the removed channels gone."""
from __future__ import annotations

import copy
import warnings
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..graph.graph import DependencyGraph
from ..graph.trace import call_model, preserved_state
from ..planning.plan import Plan, whole_number
from .edits import Edits, apply_edits, compute_edits, removed_classes

EDITS_ATTR = "_fastprune_edits"


def as_removal(removal: Plan | Mapping[str, Any]) -> dict[str, list[int]]:
    """A removal dict from a Plan or a dict {producer: indices}."""
    if isinstance(removal, Plan):  # every listed producer, even one that keeps all (checked for coupling)
        return {k: [i for i in range(removal.channels[k]) if i not in set(v)] for k, v in removal.keep.items()}
    if not isinstance(removal, Mapping):
        raise TypeError(f"fastprune: removal must be a Plan or a dict {{producer name: indices}}, got {type(removal).__name__}")
    out = {}
    for k, v in removal.items():
        if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__iter__"):
            raise ValueError(f"fastprune: the channels to remove from {k!r} must be a list of indices, got {v!r}")
        out[k] = [whole_number(i, f"channel index of {k!r}") for i in v]
    return out


def plan_edits(model: nn.Module, removal: Plan | Mapping[str, Any], example_inputs: Any,
               allow_output: bool = False, graph: DependencyGraph | None = None) -> Edits:
    """Validated per-module edits for `removal` (nothing is changed)."""
    graph = graph or DependencyGraph(model, example_inputs)
    if isinstance(removal, Plan):
        _check_plan_counts(removal, graph)
        rem = _plan_removal(removal, graph)
    else:
        rem = as_removal(removal)
    removed = removed_classes(graph, rem, model, allow_output)
    return compute_edits(graph, removed, model)


def _plan_removal(plan: Plan, graph: DependencyGraph) -> dict[str, list[int]]:
    """Channels a plan removes: a kept channel keeps everything coupled to it (a whole block)."""
    rem = {}
    for name, keep in plan.keep.items():
        kept = {graph.locate(name, i)[1] for i in keep}
        rem[name] = [i for i in range(plan.channels[name]) if graph.locate(name, i)[1] not in kept]
    return rem


def _check_plan_counts(plan: Plan, graph: DependencyGraph) -> None:
    recorded = plan.meta.get("fingerprint")
    if recorded is not None and recorded != graph.fingerprint():
        raise ValueError(f"fastprune: the plan was made for a different model (graph fingerprint {str(recorded)[:12]}..., "
                         f"this model's is {graph.fingerprint()[:12]}...)")
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
    if graph.unreached and edits:
        warnings.warn(f"fastprune: modules with parameters that the example input does not reach are left as they are: "
                      f"{graph.unreached[:8]} (a forward that does reach them may fail after pruning)", stacklevel=2)
    target = model if inplace else copy.deepcopy(model)
    undo = _undo_record(target, edits) if inplace else None
    apply_edits(target, edits)
    prev = getattr(model, EDITS_ATTR, None)
    try:
        if check:
            _check_runs(graph.trace.output_shapes, target, example_inputs, allow_output)
    except ValueError:
        if undo is not None:
            undo()
        raise
    setattr(target, EDITS_ATTR, _merge(prev, edits) if prev else edits)
    return target


def _undo_record(model: nn.Module, edits: Edits):
    """A function that puts back the tensors and attributes the edits will replace."""
    mods = dict(model.named_modules())
    saved = []
    for name, e in edits.items():
        mod = mods.get(name)
        if mod is None:
            continue
        tensors = {p: (mod._parameters[p] if p in mod._parameters else mod._buffers.get(p)) for p in e["params"]}
        attrs = {a: getattr(mod, a) for a in e["attrs"] if hasattr(mod, a)}
        saved.append((mod, tensors, attrs))

    def undo() -> None:
        for mod, tensors, attrs in saved:
            for p, t in tensors.items():
                if p in mod._parameters:
                    mod._parameters[p] = t
                else:
                    mod._buffers[p] = t
            for a, v in attrs.items():
                setattr(mod, a, v)
    return undo


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
