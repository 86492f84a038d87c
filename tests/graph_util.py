"""Helpers for graph/surgery tests: random removals and an independent 'dead channel' copy."""
from __future__ import annotations

import copy
import random

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from zoo import ZOO

import fastprune
from fastprune.graph import ChannelGroup, DependencyGraph


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t for t in tree_flatten(model(x))[0] if isinstance(t, torch.Tensor)]


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [t.shape for t in a] == [t.shape for t in b]
    return max(((u.double() - v.double()).abs().max() / (u.double().abs().max() + 1e-30)).item() for u, v in zip(a, b))


def random_removal(graph: DependencyGraph, frac: float = 0.5, seed: int = 0,
                   include_output: bool = False) -> tuple[dict[str, list[int]], dict[int, list[int]]]:
    """Remove `frac` of the channels of every prunable group: (removal dict, {group: channels})."""
    rng = random.Random(seed)
    removal: dict[str, list[int]] = {}
    chosen: dict[int, list[int]] = {}
    for g in graph.groups:
        if not g.prunable or (g.touches_output and not include_output):
            continue
        k = max(1, min(g.channels - 1, int(round(g.channels * frac))))
        cs = sorted(rng.sample(range(g.channels), k))
        chosen[g.id] = cs
        p = g.producers[rng.randrange(len(g.producers))]
        removal.setdefault(p.module, []).extend(p.indices[c] for c in cs)
    return removal, chosen


def dead_copy(model: nn.Module, graph: DependencyGraph, chosen: dict[int, list[int]]) -> nn.Module:
    """A copy where the chosen group channels are exactly dead: producing rows (weight + bias)
    and the following norms' weight and bias are zero. Independent of the surgery code."""
    dead = copy.deepcopy(model)
    mods = dict(dead.named_modules())
    with torch.no_grad():
        for gid, cs in chosen.items():
            g: ChannelGroup = graph.groups[gid]
            for m in g.members:
                if m.dim != "out":
                    continue
                mod = mods[m.module]
                for c in cs:
                    for p in m.positions(c):
                        if m.kind in ("conv", "depthwise", "grouped", "linear"):
                            mod.weight[p] = 0
                            if mod.bias is not None:
                                mod.bias[p] = 0
                        elif m.kind == "conv_transpose":
                            assert mod.groups == 1
                            mod.weight[:, p] = 0
                            if mod.bias is not None:
                                mod.bias[p] = 0
                        elif m.kind in ("batchnorm", "groupnorm", "instancenorm"):
                            if getattr(mod, "weight", None) is not None:
                                mod.weight[p] = 0
                                mod.bias[p] = 0
    return dead


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_thread():
    """Generator for a module fixture: tiny models run fastest (and least noisily) on one thread,
    torch's and OpenBLAS's (on a loaded machine their threads wait for each other: a 0.5 ms
    forward pass of a tiny VGG took 0.8 s with 2 threads, a 64x64 eigh 7 ms instead of 1)."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def zoo_statistics(name: str, draw=torch.rand):
    """A seeded `tests/zoo.py` model (eval mode) and its statistics of one batch drawn by `draw`
    (seed 0), without influence and without the groups that touch the output."""
    fac, shape = ZOO[name]
    torch.manual_seed(0)
    model = fac().eval()
    x = draw(shape, generator=torch.Generator().manual_seed(0))
    stats = fastprune.collect(model, [x], influence=False, progress=False)
    stats.groups = {g: info for g, info in stats.groups.items() if not info.touches_output}
    return model, stats
