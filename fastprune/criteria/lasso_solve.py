"""The LASSO of He et al. 2017 ("Channel pruning for accelerating very deep neural networks",
ICCV 2017) on a quadratic form, and the search for the λ that leaves exactly k channels.

With Z_c channel c's contribution to the consumer's output and Y = Σ_c Z_c, the objective
½‖Y − Σ_c β_c Z_c‖² + λ‖β‖₁ depends on the data only through Q_cd = <Z_c, Z_d> and
b_c = <Y, Z_c> = (Q 1)_c: ½ βᵀQβ − bᵀβ + λ‖β‖₁ (+ a constant). It is scikit-learn's
``Lasso(alpha=λ/n, fit_intercept=False)`` on the n rows of [Z_1 ... Z_C] and Y.

He et al. raise λ until exactly k coefficients are non-zero: `select_k` bisects λ on a log
scale between 0 (every live channel) and λ_max = max|b| (none), reading each λ's solution off
the exact path (`lasso_path`: piecewise linear in λ between the λ at which a channel joins or
leaves; `solve`, coordinate descent, converges to the same solutions).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def solve(q: np.ndarray, b: np.ndarray, lam: float, beta: np.ndarray | None = None, tol: float = 1e-12,
          max_sweeps: int = 100_000) -> np.ndarray:
    """argmin_β ½βᵀQβ − bᵀβ + λ‖β‖₁ by cyclic coordinate descent (Q symmetric PSD). Stops when
    a full sweep moves no coefficient by more than `tol` × the largest |β|·sqrt(Q_jj); channels
    with Q_jj = 0 (dead) stay 0."""
    c = q.shape[0]
    diag = np.diag(q).copy()
    live = np.flatnonzero(diag > 1e-14 * max(1.0, float(diag.max(initial=0.0))))
    beta = np.zeros(c) if beta is None else np.array(beta, dtype=np.float64)
    beta[np.setdiff1d(np.arange(c), live)] = 0.0
    grad = b - q @ beta  # r_j = b_j − (Qβ)_j
    active = live
    full = True
    for _ in range(max_sweeps):
        delta, scale = 0.0, 0.0
        for j in active:
            old = beta[j]
            r = grad[j] + diag[j] * old
            new = np.sign(r) * max(abs(r) - lam, 0.0) / diag[j]
            if new != old:
                grad -= (new - old) * q[:, j]
                beta[j] = new
                delta = max(delta, abs(new - old) * np.sqrt(diag[j]))
            scale = max(scale, abs(new) * np.sqrt(diag[j]))
        if delta <= tol * max(scale, 1e-300):
            if full:
                break
            active, full = live, True  # converged on the support: check every coordinate once more
        else:
            nz = live[beta[live] != 0]
            active, full = (nz, False) if 0 < len(nz) < len(live) else (live, True)
    return beta


@dataclass
class Selection:
    keep: list[int]       # the k channels, ascending
    lam: float            # the λ at which exactly len(keep) coefficients are non-zero
    beta: np.ndarray      # the LASSO solution at that λ
    exact: bool           # False: no λ gives exactly k non-zeros (ties); the k largest |β_c|·‖Z_c‖ were kept


#: how far below λ_max `select_k` searches (log λ from log λ_max − DEPTH to log λ_max)
DEPTH = 30.0


def live_channels(q: np.ndarray) -> np.ndarray:
    """Channels whose contribution is not (numerically) zero: Q_cc above 1e-14 of the largest."""
    diag = np.diag(q)
    return diag > 1e-14 * max(1.0, float(diag.max(initial=0.0)))


def search_path(q: np.ndarray, b: np.ndarray) -> list["Segment"]:
    """The exact path of (Q, b) from λ_max down to λ_max·e^−DEPTH: all that `select_k` bisects on
    and, from λ_max down to any grid above that, all that `path_entries` reads (one path per
    problem serves both)."""
    live = live_channels(q)
    lam_max = float(np.max(np.abs(b[live]), initial=0.0))
    return lasso_path(q, b, live, stop=lam_max * float(np.exp(-DEPTH))) if lam_max > 0 else []


def select_k(q: np.ndarray, k: int, b: np.ndarray | None = None, iters: int = 100,
             tol: float = 1e-12, path: list["Segment"] | None = None) -> Selection:
    """The λ for which the LASSO keeps exactly `k` channels (He et al. 2017), by bisection of
    log λ, each λ's solution read off the exact path (`lasso_path`). If the count jumps over k
    (channels entering together), the solution at the smallest λ with more than k non-zeros is
    cut to the k largest |β_c|·sqrt(Q_cc). `tol`: of the coordinate descent when every live
    channel is kept (λ = 0). `path`: `search_path(q, b)` when the caller has it already."""
    q = 0.5 * (q + q.T)
    c = q.shape[0]
    if not 1 <= k <= c:
        raise ValueError(f"fastprune: LASSO selection needs 1 <= k <= {c}, got k={k}")
    b = q.sum(1) if b is None else np.asarray(b, dtype=np.float64)
    diag = np.diag(q)
    live = live_channels(q)
    lam_max = float(np.max(np.abs(b[live]), initial=0.0))
    if lam_max <= 0 or k >= int(live.sum()):  # nothing to choose: every live channel (then dead ones)
        order = sorted(range(c), key=lambda i: (not live[i], i))[:k]
        return Selection(sorted(order), 0.0, solve(q, b, 0.0, tol=tol) if lam_max > 0 else np.zeros(c), True)
    lo, hi = np.log(lam_max) - DEPTH, np.log(lam_max)  # count(hi) = 0 < k; count(lo): (nearly) every live channel
    path = search_path(q, b) if path is None else path
    beta_lo: np.ndarray | None = None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        beta = solution_at(path, float(np.exp(mid)), c)
        n = int(np.count_nonzero(beta))
        if n == k:
            return Selection(sorted(np.flatnonzero(beta).tolist()), float(np.exp(mid)), beta, True)
        if n > k:
            lo, beta_lo = mid, beta
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    if beta_lo is None:  # never more than k non-zeros (collinear channels): the largest solution found
        beta_lo = solution_at(path, float(np.exp(lo)), c)
    strength = np.abs(beta_lo) * np.sqrt(np.maximum(diag, 0.0))
    keep = sorted(np.argsort(-strength, kind="stable")[:k].tolist())
    return Selection(keep, float(np.exp(lo)), beta_lo, False)


@dataclass
class Segment:
    """One piece of the LASSO path: for high > λ > low the solution is β_A = u − λ v on the
    channels `active` (the others 0)."""
    high: float
    low: float
    active: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def beta(self, lam: float, c: int) -> np.ndarray:
        out = np.zeros(c)
        out[self.active] = self.u - lam * self.v
        return out


def lasso_path(q: np.ndarray, b: np.ndarray, live: np.ndarray, stop: float = 0.0) -> list[Segment]:
    """The exact LASSO solution path from λ_max = max|b_live| down to `stop` (Osborne et al. 2000;
    Efron et al. 2004, LARS with the lasso modification) on the `live` channels: between
    breakpoints β_A(λ) = Q_AA⁻¹(b_A − λ s_A) on the active set A with signs s, and the next
    breakpoint is the largest λ below the current one where an inactive channel's correlation
    c_j = b_j − Q_jA β_A reaches ±λ (it joins) or an active coefficient reaches 0 (it leaves).
    Q restricted to the live channels should be positive definite (the solution at each λ is then
    unique, the one coordinate descent converges to); exactly collinear active channels get the
    minimum-norm solution."""
    idx = np.flatnonzero(live)
    ql, bl = q[np.ix_(idx, idx)], b[idx]
    n = len(idx)
    if n == 0 or not np.any(bl):
        return []
    first = int(np.argmax(np.abs(bl)))
    active, signs = [first], [float(np.sign(bl[first]))]
    lam = float(np.abs(bl[first]))
    path: list[Segment] = []
    for _ in range(10 * n + 100):  # each channel joins and leaves a few times at most
        a, s = np.asarray(active), np.asarray(signs)
        qa = ql[np.ix_(a, a)]
        try:
            u, v = np.linalg.solve(qa, np.column_stack([bl[a], s])).T  # β_A(λ) = u − λ v
        except np.linalg.LinAlgError:
            u, v = (np.linalg.pinv(qa, hermitian=True) @ np.column_stack([bl[a], s])).T
        alpha, gamma = bl - ql[:, a] @ u, ql[:, a] @ v  # c_j(λ) = α_j + λ γ_j
        outside = np.ones(n, dtype=bool)
        outside[a] = False
        join, join_sign = np.full(n, -np.inf), np.zeros(n)
        for sg in (1.0, -1.0):
            den = sg - gamma
            with np.errstate(divide="ignore", invalid="ignore"):
                at = np.where(outside & (den != 0), alpha / den, -np.inf)
            better = (at > 0) & (at < lam * (1 - 1e-12)) & (at > join)
            join[better], join_sign[better] = at[better], sg
        with np.errstate(divide="ignore", invalid="ignore"):
            leave = np.where(v != 0, u / v, -np.inf)
        leave = np.where((leave > 0) & (leave < lam * (1 - 1e-12)), leave, -np.inf)
        j_in, j_out = int(np.argmax(join)), int(np.argmax(leave))
        nxt = max(float(join[j_in]), float(leave[j_out]), 0.0)
        path.append(Segment(lam, nxt, idx[a], u, v))
        if nxt <= stop:
            break
        if join[j_in] >= leave[j_out]:
            active.append(j_in)
            signs.append(float(join_sign[j_in]))
        else:
            del active[j_out], signs[j_out]
        lam = nxt
    return path


def solution_at(path: list[Segment], lam: float, c: int) -> np.ndarray:
    """β(λ) on a `lasso_path` (0 above λ_max)."""
    for seg in path:
        if seg.low < lam <= seg.high:
            return seg.beta(lam, c)
    return np.zeros(c) if not path or lam > path[0].high else path[-1].beta(lam, c)


def path_entries(q: np.ndarray, b: np.ndarray, lams: np.ndarray, live: np.ndarray,
                 path: list[Segment] | None = None) -> np.ndarray:
    """For each channel, the largest λ of `lams` (descending, lams[0] = λ_max = max|b_live|) at
    which its LASSO coefficient is non-zero on the exact path (`lasso_path`, or `path` when the
    caller has one reaching below lams[-1], e.g. `search_path`); 0: never."""
    out = np.zeros(q.shape[0])
    g = 1  # at lams[0] = λ_max every coefficient is 0
    for seg in lasso_path(q, b, live, stop=float(lams[-1])) if path is None else path:
        while g < len(lams) and lams[g] > seg.low:  # grid points inside (low, high): the support is A
            if lams[g] < seg.high:
                fresh = seg.active[out[seg.active] == 0]
                out[fresh] = lams[g]
            g += 1
    return out
