"""Reconstruction after pruning: the least-squares refit of a consumer convolution's weights on
the kept channels (He et al. 2017), from the patch Gram (raw shifted cross-moments) that
`collect(..., patch_gram=True)` streams, never from stored activations.

`refit_weights(model, stats, plan)` computes the new consumer weights before pruning (it needs
the original weights), `apply_weights` copies them into the pruned model; `prune_with_refit`
does both around `prune`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastprune.criteria.context import as_numpy

from .prune import prune


def refit_weight(gram: np.ndarray, w: np.ndarray, keep: list[int], ridge: float = 1e-9) -> np.ndarray:
    """Least-squares weights (O, |K|, kh, kw) on the kept channels K that best reproduce the
    consumer's output from all channels: W_K'^T = G_KK^-1 G_K: W^T (tiny ridge for dead taps)."""
    o, c = w.shape[:2]
    k = int(np.prod(w.shape[2:]))
    cols = (np.asarray(keep)[:, None] * k + np.arange(k)[None, :]).ravel()
    gkk = gram[np.ix_(cols, cols)]
    gka = gram[cols, :]
    rhs = gka @ w.reshape(o, c * k).T
    reg = ridge * max(float(np.trace(gkk)) / max(len(cols), 1), 1e-300)
    sol = np.linalg.solve(gkk + reg * np.eye(len(cols)), rhs)  # (|K|k, O)
    return sol.T.reshape(o, len(keep), *w.shape[2:])


def refit_weights(model: torch.nn.Module, stats: Any, plan: Any) -> dict[str, torch.Tensor]:
    """New weights of every consumer conv that has a patch Gram, for the pruned model: the
    columns of kept channels of each pruned group are refitted by least squares, the rows
    sliced to the consumer's own kept outputs. Compute before `prune` (it needs the original
    weights), apply after with `apply_weights`."""
    modules = dict(model.named_modules())
    new: dict[str, torch.Tensor] = {}
    removed_in: dict[str, set[int]] = {}
    for gid, per in stats.patch_gram.items():
        g = stats.group(gid)
        prod = g.producers[0]
        if prod.module not in plan.keep:
            continue
        kept_prod = set(plan.keep[prod.module])
        keep = [i for i, p in enumerate(prod.indices) if p in kept_prod]
        for cname, acc in per.items():
            cons = g.consumer(cname)
            mod = modules[cname]
            w = new.get(cname)
            if w is None:
                w = mod.weight.detach().to(torch.float64).cpu().clone()
            idx = cons.indices
            sub = w[:, idx].numpy()
            fitted = refit_weight(as_numpy(acc.gram), sub, keep)
            full = np.zeros_like(sub)
            full[:, keep] = fitted
            w[:, idx] = torch.from_numpy(full)
            new[cname] = w
            removed_in.setdefault(cname, set()).update(idx[i] for i in range(len(idx)) if i not in set(keep))
    out = {}
    for cname, w in new.items():
        mod = modules[cname]
        cols = [i for i in range(w.shape[1]) if i not in removed_in[cname]]
        w = w[:, cols]
        if cname in plan.keep:
            w = w[plan.keep[cname]]
        out[cname] = w.to(mod.weight.dtype)
    return out


def apply_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Copy refitted weights into a pruned model (shapes must match)."""
    modules = dict(model.named_modules())
    for name, w in weights.items():
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"fastprune: pruned model has no module '{name}'")
        if tuple(mod.weight.shape) != tuple(w.shape):
            raise ValueError(f"fastprune: refitted weight for '{name}' has shape {tuple(w.shape)}, "
                             f"the pruned module {tuple(mod.weight.shape)}: prune with the same plan first")
    with torch.no_grad():
        for name, w in weights.items():
            modules[name].weight.copy_(w.to(modules[name].weight.device))
    return model


def prune_with_refit(model: torch.nn.Module, plan: Any, stats: Any, example_inputs: Any = None) -> torch.nn.Module:
    """`fastprune.prune(model, plan)` followed by the least-squares refit of consumer weights."""
    weights = refit_weights(model, stats, plan)
    if example_inputs is None:
        example_inputs = stats.example_inputs(model)
    out = prune(model, plan, example_inputs)
    pruned = out if isinstance(out, torch.nn.Module) else model
    return apply_weights(pruned, weights)
