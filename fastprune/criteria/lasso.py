"""Post-pruning channel selection (He et al. 2017, "Channel pruning"): LASSO on the
channels' contributions to each consuming conv, then a least-squares refit of the consumer's
weights on the kept channels. Every term comes from the patch Gram (raw shifted cross-moments),
never from stored activations.

With P the im2col patches of the group's channels (rows: positions, columns: (channel, tap))
and G = P^T P the patch Gram, channel c's contribution to the consumer's output is
Z_c = P_c W_c^T and Y = sum_c Z_c, so <Z_c, Z_d> = tr(W_c G_cd W_d^T) =: Q_cd and
<Y, Z_c> = (Q 1)_c: the LASSO objective 1/2||Y - sum_c beta_c Z_c||^2 + lam ||beta||_1 is a
quadratic in beta solved by coordinate descent.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .context import GroupContext, Scored, as_numpy


def contribution_gram(gram: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Q_cd = <Z_c, Z_d> from a patch Gram (C*K, C*K) (channel-major, then kernel taps in
    row-major order, as `torch.nn.functional.unfold`) and consumer weights (O, C, kh, kw)."""
    o, c = w.shape[:2]
    k = int(np.prod(w.shape[2:]))
    if gram.shape != (c * k, c * k):
        raise ValueError(f"fastprune: patch Gram of shape {gram.shape} does not fit weights {tuple(w.shape)}")
    w3 = w.reshape(o, c, k)
    g4 = gram.reshape(c, k, c, k)
    t = np.einsum("cadb,odb->ocad", g4, w3, optimize=True)  # (o, c, k, d)
    return np.einsum("oca,ocad->cd", w3, t, optimize=True)


def lasso_path_scores(q: np.ndarray, n_lambdas: int = 60, tol: float = 1e-10, max_sweeps: int = 500) -> np.ndarray:
    """Importance per channel = the largest lambda at which its coefficient is still non-zero
    on the LASSO path (lambda raised until few channels remain; the last ones to leave are
    the most important). Ties broken by the unpenalised contribution b_c = (Q 1)_c."""
    q = 0.5 * (q + q.T)
    c = q.shape[0]
    b = q.sum(1)
    diag = np.diag(q).copy()
    live = diag > 1e-14 * max(1.0, float(diag.max(initial=0.0)))
    lam_max = float(np.max(np.abs(b[live]), initial=0.0))
    scores = np.zeros(c)
    if lam_max <= 0:
        return scores
    beta = np.zeros(c)
    lams = lam_max * np.geomspace(1.0, 1e-4, n_lambdas)
    for lam in lams:
        for _ in range(max_sweeps):
            delta = 0.0
            for j in np.flatnonzero(live):
                r = b[j] - q[j] @ beta + diag[j] * beta[j]
                new = np.sign(r) * max(abs(r) - lam, 0.0) / diag[j]
                delta = max(delta, abs(new - beta[j]) * np.sqrt(diag[j]))
                beta[j] = new
            if delta < tol * np.sqrt(max(float(b.sum()), 1e-300)):
                break
        newly = (beta != 0) & (scores == 0)
        scores[newly] = lam
    tie = np.abs(b) / (np.abs(b).max() + 1e-300) * 1e-9 * lam_max
    return scores + tie


def lasso(ctx: GroupContext) -> Scored:
    grams = ctx.stats.patch_gram.get(ctx.gid, {})
    if not grams:
        if ctx.stats.meta.get("patch_gram"):  # no ungrouped conv consumer: rank by influence
            from .nci import _influence
            return Scored(_influence(ctx), info={"lasso": "no patch Gram (consumer is not an ungrouped conv): nci"})
        raise ValueError(f"fastprune: 'lasso' needs the patch Gram of group {ctx.gid}: collect with patch_gram=True")
    by_name = {c["module"]: c for c in ctx.group.consumers}
    q = np.zeros((ctx.channels, ctx.channels))
    for cname, acc in grams.items():
        w, _ = ctx.consumer_weight(by_name[cname])
        qc = contribution_gram(as_numpy(acc.gram), as_numpy(w))
        energy = float(qc.sum())
        if energy > 0:
            q += qc / energy  # every consumer's output counts equally
    return Scored(lasso_path_scores(q))


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
        if prod["module"] not in plan.keep:
            continue
        kept_prod = set(plan.keep[prod["module"]])
        keep = [i for i, p in enumerate(prod["indices"]) if p in kept_prod]
        for cname, acc in per.items():
            cons = next(c for c in g.consumers if c["module"] == cname)
            mod = modules[cname]
            w = new.get(cname)
            if w is None:
                w = mod.weight.detach().to(torch.float64).cpu().clone()
            idx = cons["indices"]
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
    from fastprune.surgery import prune
    weights = refit_weights(model, stats, plan)
    if example_inputs is None:
        example_inputs = stats.example_inputs(model)
    out = prune(model, plan, example_inputs)
    pruned = out if isinstance(out, torch.nn.Module) else model
    return apply_weights(pruned, weights)
