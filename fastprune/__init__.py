"""fastprune: data-driven filter pruning for convolutional (segmentation) networks.

The public names below are a contract. They load lazily so that `import fastprune`
stays cheap and each layer imports only what it uses.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._ext import build_info, cpu_isa, cuda_available, set_cpu_isa

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "ChannelMoments": "fastprune.stats.moments",
    "channel_moments": "fastprune.stats.moments",
    "InfluenceMoments": "fastprune.stats.influence",
    "PatchGram": "fastprune.stats.influence",
    "conv_influence": "fastprune.stats.influence",
    "patch_gram": "fastprune.stats.influence",
    "nci_w": "fastprune.stats.influence",
    "Statistics": "fastprune.stats.statistics",
    "collect": "fastprune.stats.collect",
    "DependencyGraph": "fastprune.graph",
    "ChannelGroup": "fastprune.graph",
    "count": "fastprune.graph.cost",
    "Count": "fastprune.graph.cost",
    "masked": "fastprune.surgery",
    "prune": "fastprune.surgery",
    "save_pruned": "fastprune.surgery",
    "load_pruned": "fastprune.surgery",
    "Plan": "fastprune.planning.plan",
    "plan": "fastprune.planning",
    "Tolerance": "fastprune.planning.tolerance",
    "largest_within": "fastprune.planning.tolerance",
    "prune_with_gates": "fastprune.train.gates",
    "gates_plan": "fastprune.train.gates",
    "compress": "fastprune.workflows.compression",
    "compare": "fastprune.report.frontier",
}
_SUBPACKAGES = {"stats", "graph", "criteria", "planning", "surgery", "train", "models", "data", "workflows", "report", "cli"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fastprune.{name}")
    raise AttributeError(f"module 'fastprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBPACKAGES)


__all__ = ["build_info", "cpu_isa", "cuda_available", "set_cpu_isa", "__version__", *_LAZY]
