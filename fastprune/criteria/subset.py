"""Subset selection: the channels that best reconstruct what the consumers read.

For a consumer conv with weights W (O, C, kh, kw) and the patch Gram G = P^T P of its input
(P: im2col patches, columns channel-major then taps), the consumer's output from all channels
is Y = P W^T. Keeping a channel set K and refitting the consumer on it by least squares leaves
the residual ||Y||^2 - tr(W G_:K G_KK^+ G_K: W^T) (the refit is `fastprune.surgery.reconstruct`).
Greedy forward selection adds, one channel (one block of kh*kw columns) at a time, the channel
that removes most of that residual, summed over the group's consumers with each consumer's
output energy normalised to 1 (every consumer counts equally, as in NCI). Greedy selections are
nested, so the selection order is the answer for every k: a channel's score is the fraction of
the consumers' output still unexplained just before it joined (non-increasing along the order;
the top-k by score are the greedy k-subset).

Without a patch Gram the same greedy runs on the channel covariance with the zero-lag consumer
metric M = sum_taps W_t^T W_t (`subset_cov`): the residual tr(M (S - S_:K S_KK^+ S_K:)) is the
consumer output error of the covariance fold x_R ~ mu_R + S_RK S_KK^+ (x_K - mu_K) when the
residual is spatially white.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .base import Criterion, register
from .context import GroupContext, as_numpy

_RCOND = 1e-10


def _block_pinv(a: np.ndarray, scale: float) -> np.ndarray:
    """Pseudo-inverses of a stack of small symmetric PSD blocks (..., t, t); eigenvalues below
    rcond * scale count as 0."""
    cut = _RCOND * max(scale, 1e-300)
    if a.shape[-1] == 1:  # 1 x 1 blocks are their own eigenvalue (the same numbers as eigh, without the call)
        return np.where(a > cut, 1.0 / np.where(a > cut, a, 1.0), 0.0)
    w, v = np.linalg.eigh(0.5 * (a + np.swapaxes(a, -1, -2)))
    inv = np.where(w > cut, 1.0 / np.where(w > cut, w, 1.0), 0.0)
    return (v * inv[..., None, :]) @ np.swapaxes(v, -1, -2)


def greedy_order(targets: Sequence[tuple[np.ndarray, np.ndarray]], channels: int, taps: int,
                 limit: int | None = None) -> tuple[list[int], list[float]]:
    """Greedy forward block selection.

    `targets`: per consumer (G, W) with G the (C*taps)^2 Gram of its input and W (O, C*taps) its
    weights restricted to the group's channels. Returns the selection order (all channels, or
    the first `limit`) and the residual fraction (mean over consumers of unexplained output
    energy) just before each pick; channels never worth picking (zero gain) follow in index order.
    """
    n = channels * taps
    states = []
    for g, w in targets:
        g = 0.5 * (np.asarray(g, dtype=np.float64) + np.asarray(g, dtype=np.float64).T)
        w = np.asarray(w, dtype=np.float64).reshape(-1, n)
        if g.shape != (n, n):
            raise ValueError(f"fastprune: Gram of shape {g.shape} does not fit {channels} channels x {taps} taps")
        f = g @ w.T  # cross moments of the patches with the outputs
        energy = float(np.sum(w * f.T))
        if energy > 0:
            states.append((g, f, energy, float(np.trace(g)) / n))  # g and f are new arrays: updated in place
    order: list[int] = []
    residual: list[float] = []
    left = list(range(channels))
    frac = 1.0
    stop = channels if limit is None else min(int(limit), channels)
    # each state holds the residual Gram and cross moments of the channels still `left`, in that
    # order, in its leading rows and columns: a pick is a rank-`taps` update in place, then the
    # last block moves into the picked one's place (no copy of the shrinking matrix)
    while left and len(order) < stop and states:
        n_left = len(left)
        m = n_left * taps
        gains = np.zeros(n_left)
        pinvs = []
        for r, f, energy, scale in states:
            view = r[:m, :m].reshape(n_left, taps, n_left, taps)
            blocks = view[np.arange(n_left), :, np.arange(n_left), :]  # diagonal blocks (L, taps, taps)
            p = _block_pinv(blocks, scale)
            fb = f[:m].reshape(n_left, taps, -1)  # (L, taps, O)
            gains += np.sum(fb * (p @ fb), axis=(1, 2)) / energy  # fb_l^T p_l fb_l, batched through BLAS
            pinvs.append(p)
        best = int(np.argmax(gains))
        if gains[best] <= 1e-14:
            break
        order.append(left[best])
        residual.append(frac)
        frac = max(frac - float(gains[best]) / len(states), 0.0)
        b, last = slice(best * taps, (best + 1) * taps), slice(m - taps, m)
        for (r, f, _, _), p in zip(states, pinvs):
            rb = r[:m, b] @ p[best]  # (m, taps)
            f[:m] -= rb @ f[b]
            r[:m, :m] -= rb @ r[b, :m]
            if best != n_left - 1:
                r[b, :m] = r[last, :m]
                r[:m, b] = r[:m, last]
                f[b] = f[last]
        left[best] = left[-1]
        left.pop()
    left.sort()
    order += left if limit is None else left[: max(0, stop - len(order))]
    residual += [0.0] * (len(order) - len(residual))
    return order, residual


def scores_from_order(order: Sequence[int], residual: Sequence[float], channels: int) -> np.ndarray:
    """Scores whose top-k is the first k of `order`: the residual before each pick, made strictly
    decreasing along the order (ties broken by position), channels not in `order` lowest."""
    s = np.full(channels, -1.0)
    tiny = 1e-9 / max(channels, 1)
    for pos, (j, r) in enumerate(zip(order, residual)):
        s[j] = float(r) - pos * tiny
    return s


def _consumer_targets(ctx: GroupContext) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    grams = ctx.stats.patch_gram.get(ctx.gid, {})
    targets, taps = [], None
    for cname, acc in grams.items():
        w, _ = ctx.consumer_weight(ctx.group.consumer(cname))
        w = as_numpy(w)
        t = int(np.prod(w.shape[2:]))
        if taps is not None and t != taps:
            continue  # consumers of different kernel sizes cannot share one block layout
        taps = t
        targets.append((as_numpy(acc.gram), w.reshape(w.shape[0], -1)))
    return targets, taps or 1


def consumer_metric(ctx: GroupContext) -> np.ndarray:
    """M = sum over consumer convs of sum over taps W_t^T W_t (C, C), each consumer scaled to
    unit trace; the identity when no consumer has weights over the group's channels."""
    m = np.zeros((ctx.channels, ctx.channels))
    for c in ctx.group.consumers:
        mod = ctx.module(c.module)
        if c.kind == "conv":
            w, _ = ctx.consumer_weight(c)
            w = as_numpy(w)
            wt = w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 0, 1)  # (taps, O, C)
        elif isinstance(mod, torch.nn.Linear):
            wt = ctx.consumer_columns(c).sum(2).T.numpy()[None]  # (1, O, C); a flattened block: summed
        else:
            continue
        mc = np.tensordot(wt, wt, axes=([0, 1], [0, 1]))  # sum over taps and outputs: (C, C)
        tr = float(np.trace(mc))
        if tr > 0:
            m += mc / tr
    return m if np.trace(m) > 0 else np.eye(ctx.channels)


def _covariance_order(ctx: GroupContext) -> tuple[list[int], list[float]]:
    """Greedy selection on the channel covariance with the consumers' zero-lag metric."""
    s = ctx.covariance()
    m = consumer_metric(ctx)
    # tr(M Res) with Res the residual covariance = ||M^1/2 x - proj||: a Gram target with W = M^1/2
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return greedy_order([(s, root)], ctx.channels, 1)


@register
class SubsetCov(Criterion):
    """Greedy selection on the channel covariance with the consumers' zero-lag metric (needs only
    the covariance that `collect` gathers by default)."""
    name = "subset_cov"
    needs = frozenset({"moments", "covariance"})

    def scores(self, ctx: GroupContext) -> np.ndarray:
        return scores_from_order(*_covariance_order(ctx), ctx.channels)

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        return {"selection": "greedy on the covariance"}


@register
class Subset(Criterion):
    """Greedy column-subset selection on the consumers' patch Grams; a group whose consumers are
    not ungrouped convolutions uses the covariance form."""
    name = "subset"
    needs = frozenset({"moments", "covariance", "patch_gram"})

    def scores(self, ctx: GroupContext) -> np.ndarray:
        targets, taps = _consumer_targets(ctx)
        if not targets:
            return scores_from_order(*_covariance_order(ctx), ctx.channels)
        return scores_from_order(*greedy_order(targets, ctx.channels, taps), ctx.channels)

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        grams = ctx.stats.patch_gram.get(ctx.gid, {})
        return {"selection": "greedy on the patch Gram" if grams else "greedy on the covariance"}


__all__ = ["Subset", "SubsetCov", "consumer_metric", "greedy_order", "scores_from_order"]
