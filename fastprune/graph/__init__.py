"""Dependency graph: which output channels of which modules must be removed together.

`DependencyGraph(model, example_inputs)` runs the model once under a `TorchFunctionMode` and
follows the channel dimension through every torch call (rules in `rules.py`). The result is a
list of `ChannelGroup`s: group channel i is a set of (module, channel) that goes as one
(residual adds, SE gating, depthwise convs, whole GroupNorm groups, max-unpool indices,
chunk halves, channel shuffles ...). Concatenation offsets and flatten->Linear blocks are
explicit in each `Member`'s `indices` / `block`. Calls a rule does not understand block the
channels that reach them (`blocked_by` names the op); nothing is guessed.

`count(model, example_inputs)` (in `cost.py`) gives parameters and MACs per layer.
"""
from .graph import ChannelGroup, DependencyGraph, Member

__all__ = ["ChannelGroup", "DependencyGraph", "Member"]
