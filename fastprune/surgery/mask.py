"""Masking: make removed channels exactly dead in place, without changing shapes.

Each consumer's input channels that a removal takes away are multiplied by zero in a forward
pre-hook, so the masked model computes what the pruned model computes (on the kept output
channels) and the dead channels get no gradient.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..graph.graph import DependencyGraph
from ..planning.plan import Plan
from .edits import _positions, removed_classes
from .prune import as_removal


class Masked:
    """Handle of masking hooks; `.remove()` or use as a context manager."""

    def __init__(self, handles: list, masks: dict[str, torch.Tensor]) -> None:
        self.handles = handles
        self.masks = masks

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "Masked":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _hook(mask: torch.Tensor, linear: bool):
    def pre(mod: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if linear:
            m = mask.to(x.device, x.dtype)
        else:
            ch = 1 if x.ndim == mod.weight.ndim else 0
            shape = [1] * x.ndim
            shape[ch] = -1
            m = mask.to(x.device, x.dtype).view(shape)
        return (x * m, *args[1:])
    return pre


def masked(model: nn.Module, removal: Plan | Mapping[str, Any], example_inputs: Any,
           allow_output: bool = False, graph: DependencyGraph | None = None) -> Masked:
    """Zero, in place via hooks, every consumer input that `prune` would remove."""
    graph = graph or DependencyGraph(model, example_inputs)
    removed = removed_classes(graph, as_removal(removal), model, allow_output)
    pos = _positions(graph, removed)
    mods = dict(model.named_modules())
    plan: dict[str, set[int]] = {}
    for (name, kind, role), s in pos.items():
        if role == "in" and kind in ("conv", "conv_transpose", "linear", "grouped"):
            plan.setdefault(name, set()).update(s)
    handles, masks = [], {}
    for name, s in plan.items():
        call = graph.trace.calls[name]
        if not call.own_call:
            raise NotImplementedError(f"fastprune: '{name}' is applied outside its own forward; it cannot be masked with hooks")
        mask = torch.ones(call.in_channels)
        mask[sorted(s)] = 0
        masks[name] = mask
        handles.append(mods[name].register_forward_pre_hook(_hook(mask, call.op == "linear")))
    return Masked(handles, masks)


def masked_metric(model: nn.Module, metric: Callable[[nn.Module], float], example_inputs: Any
                  ) -> Callable[[Mapping[str, Any]], float]:
    """`evaluate(removal) -> metric(model with removal masked)`: what the Tolerance rule
    (`fastprune.planning.Tolerance(eps, evaluate=...)`) evaluates candidates with."""
    graph = DependencyGraph(model, example_inputs)

    def evaluate(removal: Mapping[str, Any]) -> float:
        if not removal:
            return float(metric(model))
        with masked(model, removal, example_inputs, graph=graph):
            return float(metric(model))
    return evaluate
