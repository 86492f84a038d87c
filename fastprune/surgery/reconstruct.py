"""Reconstruction: after channels are removed, change the consumers so they still see (nearly)
what they saw.

Two forms, both from statistics `collect` streams, never from stored activations:

- ``"fold"`` (moments only): predict each removed channel from the kept ones,
  x_R ~ mu_R + B (x_K - mu_K) with B = S_RK S_KK^+ (the regression of the covariance), and fold
  the prediction into every consumer: W'[:, K] = W[:, K] + W[:, R] B per tap, and the constant
  sum_taps W[:, R] (mu_R - B mu_K) into the consumer's bias (or, for a bias-free conv followed by
  batch norm, into that norm's running mean). Borders (zero padding) are ignored.
- ``"refit"`` (patch Gram): the least-squares consumer weights on the kept channels that best
  reproduce the consumer's output from all channels, W_K'^T = G_KK^+ G_K: W^T (He et al. 2017).

`reconstruct(model, stats, plan, mode)` changes a copy of the unpruned model so that applying
the plan to it gives the reconstructed pruned model; `prune_reconstructed` does both.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from ..criteria.context import as_numpy
from ..planning.plan import Plan
from .prune import prune

MODES = ("fold", "refit")
_RIDGE = 1e-9


def refit_weight(gram: np.ndarray, w: np.ndarray, keep: list[int], ridge: float = _RIDGE) -> np.ndarray:
    """Least-squares weights (O, |K|, kh, kw) on the kept channels K that best reproduce the
    consumer's output from all channels: W_K'^T = G_KK^-1 G_K: W^T, with a tiny ridge for dead
    taps. The ridge scales with the larger of the kept and of all inputs' mean energy: kept
    channels that are nearly dead (a random selection in a network without batch norm) would
    otherwise get weights of ~ridge^-1 (their own energy)^-1/2, 1e19 and more, and the next
    layers' activations overflow."""
    o, c = w.shape[:2]
    k = int(np.prod(w.shape[2:]))
    cols = (np.asarray(keep)[:, None] * k + np.arange(k)[None, :]).ravel()
    gkk = gram[np.ix_(cols, cols)]
    rhs = gram[cols, :] @ w.reshape(o, c * k).T
    energy = max(float(np.trace(gkk)) / max(len(cols), 1), float(np.trace(gram)) / max(gram.shape[0], 1))
    reg = ridge * max(energy, 1e-300)
    sol = np.linalg.solve(gkk + reg * np.eye(len(cols)), rhs)  # (|K|k, O)
    return sol.T.reshape(o, len(keep), *w.shape[2:])


def regression(cov: np.ndarray, keep: list[int]) -> np.ndarray:
    """B = S_RK S_KK^+ (|R|, |K|): the removed channels regressed on the kept ones."""
    c = cov.shape[0]
    kept = np.asarray(keep, dtype=np.int64)
    rem = np.setdiff1d(np.arange(c), kept)
    skk = cov[np.ix_(kept, kept)]
    w, v = np.linalg.eigh(0.5 * (skk + skk.T))
    cut = 1e-10 * max(float(w.max(initial=0.0)), 1e-300)
    inv = np.where(w > cut, 1.0 / np.where(w > cut, w, 1.0), 0.0)
    return cov[np.ix_(rem, kept)] @ ((v * inv) @ v.T)


def fold_weight(cov: np.ndarray, mean: np.ndarray, w: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Consumer weights (O, C, ...) with the removed channels' prediction folded into the kept
    columns (removed columns zeroed), and the output offset (O,) of the prediction's constant."""
    c = w.shape[1]
    kept = np.asarray(keep, dtype=np.int64)
    rem = np.setdiff1d(np.arange(c), kept)
    out = np.zeros_like(w)
    out[:, kept] = w[:, kept]
    if rem.size == 0:
        return out, np.zeros(w.shape[0])
    b = regression(cov, keep)  # (R, K)
    out[:, kept] += np.einsum("or...,rk->ok...", w[:, rem], b)
    const = mean[rem] - b @ mean[kept]  # (R,)
    offset = w[:, rem].reshape(w.shape[0], rem.size, -1).sum(-1) @ const
    return out, offset


def _group_keep(stats: Any, gid: str, plan: Plan) -> list[int] | None:
    """Group-local kept indices of `gid` under `plan` (None: the plan leaves the group whole)."""
    g = stats.group(gid)
    prod = g.producers[0]
    if prod.module not in plan.keep:
        return None
    kept = set(plan.keep[prod.module])
    keep = [i for i, p in enumerate(prod.indices) if p in kept]
    return None if len(keep) == g.channels else keep


def _norm_after(stats: Any, conv: str) -> tuple[str, list[int]] | None:
    """The batch norm right after producer `conv` (its channel indices), from the graph's groups."""
    for g in stats.groups.values():
        if any(p.module == conv for p in g.producers):
            prod = next(p for p in g.producers if p.module == conv)
            for m in g.members:
                if m.kind == "batchnorm":
                    return m.module, [m.indices[i] for i in range(len(prod.indices))]
    return None


def reconstruct(model: nn.Module, stats: Any, plan: Plan, mode: str = "refit") -> nn.Module:
    """A copy of the unpruned `model` whose consumers are reconstructed for `plan` (the removed
    channels' columns zeroed, the kept ones changed); prune it with the same plan.

    `stats` are statistics of `model` (``"refit"`` needs patch_gram=True; ``"fold"`` the
    covariance). Consumers without the statistics the mode needs keep their weights.
    """
    if mode not in MODES:
        raise ValueError(f"fastprune: reconstruction mode must be one of {MODES}, got {mode!r}")
    if mode == "refit" and not stats.meta.get("patch_gram"):
        raise ValueError("fastprune: reconstruction by refit needs the patch Gram: collect with patch_gram=True")
    if mode == "fold" and not stats.meta.get("covariance", True):
        raise ValueError("fastprune: reconstruction by fold needs the covariance: collect with covariance=True")
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    with torch.no_grad():
        for gid in stats.groups:
            keep = _group_keep(stats, gid, plan)
            if keep is None:
                continue
            g = stats.group(gid)
            for cons in g.consumers:
                mod = modules[cons.module]
                if not isinstance(mod, nn.Conv2d) or mod.groups != 1:
                    continue
                idx = torch.tensor(cons.indices)
                w = as_numpy(mod.weight[:, idx])
                if mode == "refit":
                    acc = stats.patch_gram.get(gid, {}).get(cons.module)
                    if acc is None:
                        continue
                    new = np.zeros_like(w)
                    new[:, keep] = refit_weight(as_numpy(acc.gram), w, keep)
                    offset = None
                else:
                    m = stats.moments[gid]
                    new, offset = fold_weight(as_numpy(m.cov), as_numpy(m.mean), w, keep)
                mod.weight[:, idx] = torch.as_tensor(new, dtype=mod.weight.dtype)
                if offset is not None:
                    _add_offset(out, modules, stats, cons.module, torch.as_tensor(offset))
    return out


def _add_offset(model: nn.Module, modules: dict[str, nn.Module], stats: Any, name: str, offset: torch.Tensor) -> None:
    mod = modules[name]
    if mod.bias is not None:
        mod.bias += offset.to(mod.bias.dtype)
        return
    norm = _norm_after(stats, name)
    if norm is not None:
        bn = modules[norm[0]]
        if getattr(bn, "running_mean", None) is not None:
            idx = torch.tensor(norm[1])
            bn.running_mean[idx] -= offset.to(bn.running_mean.dtype)


def prune_reconstructed(model: nn.Module, plan: Plan, stats: Any, example_inputs: Any = None,
                        mode: str = "refit") -> nn.Module:
    """`prune(model, plan)` with the consumers reconstructed (`reconstruct`) first."""
    if example_inputs is None:
        example_inputs = stats.example_inputs(model)
    return prune(reconstruct(model, stats, plan, mode), plan, example_inputs, inplace=True)


__all__ = ["MODES", "fold_weight", "prune_reconstructed", "reconstruct", "refit_weight", "regression"]
