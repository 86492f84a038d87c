"""Post-pruning channel selection (He et al. 2017, "Channel pruning"): LASSO on the
channels' contributions to each consuming conv. Every term comes from the patch Gram (raw shifted cross-moments),
never from stored activations.

With P the im2col patches of the group's channels (rows: positions, columns: (channel, tap))
and G = P^T P the patch Gram, channel c's contribution to the consumer's output is
Z_c = P_c W_c^T and Y = sum_c Z_c, so <Z_c, Z_d> = tr(W_c G_cd W_d^T) =: Q_cd and
<Y, Z_c> = (Q 1)_c: the LASSO objective 1/2||Y - sum_c beta_c Z_c||^2 + lam ||beta||_1 is a
quadratic in beta (solved by coordinate descent; the path scores follow its exact solution path). The criterion's selection of k channels is He
et al.'s: the lambda at which exactly k coefficients are non-zero (`lasso_solve.select_k`,
option selection="exact", the default); selection="path" keeps the k channels that stay longest
on a fixed 60-point lambda path (the scores). The least-squares refit of the consumer's
weights on the kept channels is a surgery step (`fastprune.surgery.reconstruct`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Criterion, register
from .context import GroupContext, as_numpy
from .lasso_solve import Segment, Selection, live_channels, path_entries, search_path, select_k
from .nci import influence

#: how `lasso` picks k channels: He et al.'s exact-k lambda, or the order of entry on a fixed path
SELECTIONS = ("exact", "path")


def contribution_gram(gram: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Q_cd = <Z_c, Z_d> from a patch Gram (C*K, C*K) (channel-major, then kernel taps in
    row-major order, as `torch.nn.functional.unfold`) and consumer weights (O, C, kh, kw)."""
    o, c = w.shape[:2]
    k = int(np.prod(w.shape[2:]))
    if gram.shape != (c * k, c * k):
        raise ValueError(f"fastprune: patch Gram of shape {gram.shape} does not fit weights {tuple(w.shape)}")
    wf = w.reshape(o, c * k)
    # Q_cd = sum_{a,b} G[(c,a),(d,b)] H[(c,a),(d,b)] with H = W^T W over the outputs
    return (gram * (wf.T @ wf)).reshape(c, k, c, k).sum(axis=(1, 3))


def lasso_path_scores(q: np.ndarray, n_lambdas: int = 60, path: list[Segment] | None = None) -> np.ndarray:
    """Importance per channel = the largest lambda of a 60-point geometric grid (lambda_max down to
    1e-4 lambda_max) at which its coefficient is non-zero on the LASSO path (the last channels to
    leave as lambda rises are the most important), from the exact path (`lasso_solve.path_entries`;
    `path`: `lasso_solve.search_path` of the same problem when the caller has it).
    Ties broken by the unpenalised contribution b_c = (Q 1)_c."""
    q = 0.5 * (q + q.T)
    b = q.sum(1)
    live = live_channels(q)
    lam_max = float(np.max(np.abs(b[live]), initial=0.0))
    if lam_max <= 0:
        return np.zeros(q.shape[0])
    scores = path_entries(q, b, lam_max * np.geomspace(1.0, 1e-4, n_lambdas), live, path)
    tie = np.abs(b) / (np.abs(b).max() + 1e-300) * 1e-9 * lam_max
    return scores + tie


@dataclass(frozen=True)
class LassoOptions:
    selection: str = "exact"  # exact: the lambda with exactly k non-zeros (He et al.); path: ranking on a fixed path

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"fastprune: lasso selection must be one of {', '.join(SELECTIONS)}, "
                             f"got {self.selection!r}")


@register
class Lasso(Criterion):
    """LASSO on the channels' contributions to the consumers' outputs (every consumer counts
    equally). Selection of k channels (option `selection`): "exact" (default) raises lambda until
    exactly k coefficients are non-zero, as He et al. 2017; "path" keeps the top k by score.
    Score = the largest lambda at which the channel survives on a fixed 60-point path (what
    global budgets compare across layers). A group whose consumers are not ungrouped
    convolutions is ranked and selected by NCI."""
    name = "lasso"
    needs = frozenset({"moments", "influence", "patch_gram"})
    Options = LassoOptions

    def _q(self, ctx: GroupContext) -> np.ndarray | None:
        """Q = sum over consumers of the contribution Gram over its energy (symmetrised); None
        without a patch Gram."""
        def make() -> np.ndarray | None:
            grams = ctx.stats.patch_gram.get(ctx.gid, {})
            if not grams:
                return None
            q = np.zeros((ctx.channels, ctx.channels))
            for cname, acc in grams.items():
                w, _ = ctx.consumer_weight(ctx.group.consumer(cname))
                qc = contribution_gram(as_numpy(acc.gram), as_numpy(w))
                energy = float(qc.sum())
                if energy > 0:
                    q += qc / energy  # every consumer's output counts equally
            return 0.5 * (q + q.T)
        return ctx.cached("lasso_q", make)

    def _path(self, ctx: GroupContext, q: np.ndarray) -> list[Segment]:
        """The group's one exact LASSO path, read by the scores and by every exact-k selection."""
        return ctx.cached("lasso_path", lambda: search_path(q, q.sum(1)))

    def scores(self, ctx: GroupContext) -> np.ndarray:
        q = self._q(ctx)
        return influence(ctx) if q is None else lasso_path_scores(q, path=self._path(ctx, q))  # else NCI

    def _exact(self, ctx: GroupContext, k: int) -> Selection | None:
        q = self._q(ctx)
        if self.options.selection != "exact" or q is None or k < 1:
            return None
        return ctx.cached(("lasso_select", int(k)), lambda: select_k(q, int(k), path=self._path(ctx, q)))

    def select(self, ctx: GroupContext, k: int) -> list[int]:
        sel = self._exact(ctx, k)
        return super().select(ctx, k) if sel is None else list(sel.keep)

    def info(self, ctx: GroupContext, keep: list[int]) -> dict[str, Any]:
        sel = self._exact(ctx, len(keep))
        if sel is None:
            return {"selection": "path" if self._q(ctx) is not None else "influence"}
        return {"selection": "exact", "lambda": sel.lam, "exact_k": sel.exact}
