"""Geometry of a consuming convolution and the shifted-moment plan derived from it.

A consumer with taps t = (i, j), stride s, dilation d and zero padding reads input position
q*s + t*d - p for output position q. For a tap pair t <= t' (row-major order) the sum
sum_q A(q*s + t*d - p) * A(q*s + t'*d - p) equals the sum over the first tap's in-image positions
of A(y) * A(y + delta), delta = (t' - t) * d, with A = 0 outside the image. Those positions form a
strided rectangle per tap pair. Splitting each axis at the breakpoints of all taps' ranges and by
stride phase gives "cells" shared by many pairs: the kernels compute one sum per (cell, delta) -
a "job" - over the whole image once, and every pair's sum is a sum of jobs (offset sums with
exact border corrections and stride phase classes; the sums R_c(delta) of `influence.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence, Union

import torch

IntPair = Union[int, Sequence[int]]


def _pair(v: IntPair, what: str) -> tuple[int, int]:
    if isinstance(v, bool):
        raise TypeError(f"fastprune: {what} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, int):
        return v, v
    try:
        a, b = v  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"fastprune: {what} must be an int or a pair of ints, got {v!r}") from None
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in (a, b)):
        raise TypeError(f"fastprune: {what} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, stride, dilation and explicit (top, bottom, left, right) zero padding."""

    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0

    @classmethod
    def parse(cls, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair | str = 0,
              dilation: IntPair = 1) -> "ConvGeometry":
        """Validate torch-style arguments; padding is an int, a pair, 'same' or 'valid'."""
        kh, kw = _pair(kernel_size, "kernel_size")
        sh, sw = _pair(stride, "stride")
        dh, dw = _pair(dilation, "dilation")
        if kh < 1 or kw < 1:
            raise ValueError(f"fastprune: kernel size must be positive, got {(kh, kw)}")
        if sh < 1 or sw < 1:
            raise ValueError(f"fastprune: invalid stride {(sh, sw)}: strides must be >= 1")
        if dh < 1 or dw < 1:
            raise ValueError(f"fastprune: invalid dilation {(dh, dw)}: dilations must be >= 1")
        if isinstance(padding, str):
            if padding == "valid":
                pt = pb = pl = pr = 0
            elif padding == "same":
                if (sh, sw) != (1, 1):
                    raise ValueError("fastprune: padding='same' needs stride 1 (as in torch conv2d)")
                th, tw = dh * (kh - 1), dw * (kw - 1)
                pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
            else:
                raise ValueError(f"fastprune: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        else:
            ph, pw = _pair(padding, "padding")
            if ph < 0 or pw < 0:
                raise ValueError(f"fastprune: padding must be >= 0, got {(ph, pw)}")
            pt = pb = ph
            pl = pr = pw
        return cls(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr)

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output size of the consumer on an h x w input; ValueError when the kernel does not fit."""
        eh = self.dh * (self.kh - 1) + 1
        ew = self.dw * (self.kw - 1) + 1
        if eh > h + self.pt + self.pb or ew > w + self.pl + self.pr:
            raise ValueError(
                f"fastprune: kernel {self.kh}x{self.kw} (dilation {self.dh}x{self.dw}, extent {eh}x{ew}) "
                f"is larger than the padded input {h + self.pt + self.pb}x{w + self.pl + self.pr}")
        return (h + self.pt + self.pb - eh) // self.sh + 1, (w + self.pl + self.pr - ew) // self.sw + 1

    def to_list(self) -> list[int]:
        return [self.kh, self.kw, self.sh, self.sw, self.dh, self.dw, self.pt, self.pb, self.pl, self.pr]


@dataclass(frozen=True)
class _Axis:
    """One axis: per-tap strided position sets and the classes (interval, phase) they split into."""

    classes: tuple[tuple[int, int, int], ...]   # (start, stop, step) of in-image positions
    members: tuple[tuple[int, ...], ...]        # members[i]: classes making up tap i's positions


def _axis(n: int, k: int, s: int, d: int, p: int, n_out: int) -> _Axis:
    ranges = []
    for i in range(k):
        off = i * d - p
        q0 = -(off // s) if off < 0 else 0  # smallest q with q*s + off >= 0: ceil(-off / s)
        q1 = min(n_out - 1, (n - 1 - off) // s)
        ranges.append((q0 * s + off, q1 * s + off) if q0 <= q1 else None)
    cuts = {0, n}
    for r in ranges:
        if r is not None:
            cuts.update((r[0], r[1] + 1))
    cuts_sorted = sorted(c for c in cuts if 0 <= c <= n)
    classes: list[tuple[int, int, int]] = []
    index: dict[tuple[int, int], int] = {}
    members: list[tuple[int, ...]] = []
    for i, r in enumerate(ranges):
        mine = []
        if r is not None:
            lo, hi = r
            phase = lo % s
            for a, b in zip(cuts_sorted[:-1], cuts_sorted[1:]):
                if a < lo or b > hi + 1:
                    continue
                start = a + ((phase - a) % s)
                if start >= b:
                    continue
                key = (a, phase)
                if key not in index:
                    index[key] = len(classes)
                    classes.append((start, b, s))
                mine.append(index[key])
        members.append(tuple(mine))
    return _Axis(tuple(classes), tuple(members))


@dataclass(frozen=True, eq=False)
class ShiftPlan:
    """Jobs (cell, delta) of the shifted-moment kernels and how they sum into tap pairs."""

    deltas: torch.Tensor      # (nd, 2) int64 (dy >= 0, dx)
    cells: torch.Tensor       # (ncell, 6) int64: y0, y1, sy, x0, x1, sx (first-tap positions)
    cell_ptr: torch.Tensor    # (ncell + 1,) int64: jobs of cell c are cell_ptr[c]:cell_ptr[c+1]
    job_delta: torch.Tensor   # (njobs,) int64: delta index of each job
    pair_index: torch.Tensor  # (nentries,) int64: tap pair (index into pairs) of each entry
    job_index: torch.Tensor   # (nentries,) int64: job summed into that pair
    pairs: torch.Tensor       # (npairs, 2) int64: tap indices t <= t'
    max_dy: int
    pad_x: int

    @property
    def scatter(self) -> torch.Tensor:
        """(npairs, njobs) float64 0/1 matrix: pair sums = scatter @ job sums."""
        s = torch.zeros(self.pairs.shape[0], self.njobs, dtype=torch.float64)
        s.index_put_((self.pair_index, self.job_index), torch.ones(self.pair_index.shape[0], dtype=torch.float64),
                     accumulate=True)
        return s

    @property
    def njobs(self) -> int:
        return int(self.job_delta.numel())


@lru_cache(maxsize=64)
def shift_plan(geom: ConvGeometry, h: int, w: int) -> ShiftPlan:
    """The job list for an h x w input (cached: one per geometry and image size)."""
    ho, wo = geom.out_size(h, w)
    ya = _axis(h, geom.kh, geom.sh, geom.dh, geom.pt, ho)
    xa = _axis(w, geom.kw, geom.sw, geom.dw, geom.pl, wo)
    deltas: dict[tuple[int, int], int] = {}
    jobs: dict[tuple[int, int, int], int] = {}  # (ycls, xcls, delta) -> provisional id
    pairs: list[tuple[int, int]] = []
    entries: list[tuple[int, tuple[int, int, int]]] = []
    kt = geom.taps
    for t in range(kt):
        i, j = divmod(t, geom.kw)
        for t2 in range(t, kt):
            i2, j2 = divmod(t2, geom.kw)
            dlt = ((i2 - i) * geom.dh, (j2 - j) * geom.dw)
            di = deltas.setdefault(dlt, len(deltas))
            pidx = len(pairs)
            pairs.append((t, t2))
            for yc in ya.members[i]:
                for xc in xa.members[j]:
                    key = (yc, xc, di)
                    jobs.setdefault(key, len(jobs))
                    entries.append((pidx, key))
    # order jobs by cell so each cell's jobs are contiguous
    cell_of: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for key in jobs:
        cell_of.setdefault((key[0], key[1]), []).append(key)
    cells, cell_ptr, job_delta = [], [0], []
    job_id: dict[tuple[int, int, int], int] = {}
    for (yc, xc), keys in cell_of.items():
        y0, y1, sy = ya.classes[yc]
        x0, x1, sx = xa.classes[xc]
        cells.append((y0, y1, sy, x0, x1, sx))
        for key in sorted(keys, key=lambda k: k[2]):
            job_id[key] = len(job_delta)
            job_delta.append(key[2])
        cell_ptr.append(len(job_delta))
    dl = sorted(deltas.items(), key=lambda kv: kv[1])
    i64 = torch.int64
    return ShiftPlan(
        deltas=torch.tensor([d for d, _ in dl], dtype=i64).reshape(-1, 2),
        cells=torch.tensor(cells, dtype=i64).reshape(-1, 6),
        cell_ptr=torch.tensor(cell_ptr, dtype=i64),
        job_delta=torch.tensor(job_delta, dtype=i64),
        pair_index=torch.tensor([p for p, _ in entries], dtype=i64),
        job_index=torch.tensor([job_id[k] for _, k in entries], dtype=i64),
        pairs=torch.tensor(pairs, dtype=i64).reshape(-1, 2),
        max_dy=(geom.kh - 1) * geom.dh,
        pad_x=(geom.kw - 1) * geom.dw,
    )
