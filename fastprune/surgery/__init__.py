"""Surgery: apply a removal physically (`prune`), virtually (`masked`), and replay it.

A removal is `{producer name: output-channel indices}` or a `Plan`; coupled channels (see
`fastprune.graph`) go with them. `prune` returns a smaller model whose outputs equal the
original with those channels dead; `masked` zeroes the same channels in place with hooks
(for fast searches and learned gates). `save_pruned`/`load_pruned` store the plan, the
per-module edits (JSON) and the weights (safetensors) and rebuild from a model factory.
"""
from .mask import Masked, masked, masked_metric
from .prune import prune
from .replay import load_pruned, save_pruned

__all__ = ["Masked", "load_pruned", "masked", "masked_metric", "prune", "save_pruned"]
