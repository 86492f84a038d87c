"""Exact next-convolution influence and the patch Gram from shifted moments (CPU and CUDA).

`InfluenceMoments` accumulates the raw auto-moments R_c(t, t') = sum A_c(q*s + t*d - p) *
A_c(q*s + t'*d - p) over images and output positions of a consuming convolution; with the
kernel autocorrelation K_c(t, t') = sum_o W[o, c, t] W[o, c, t'] it gives the energy channel c
contributes to the consumer's output, I_c = sum K_c * R_c, without any per-channel convolution.
`PatchGram` accumulates sum U U^T of the consumer's im2col patches (torch unfold's row order)
without unfolding. Both stream, merge by addition, and save as float64/int64 tensors.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any, Sequence, Union

import numpy as np
import torch

from .._ext import _C
from .._views import as_tensor, check_device, check_float, view
from .influence_geometry import ConvGeometry, IntPair, ShiftPlan, shift_plan
from .workspace import Workspace

Sample = Union[int, float, None]

_SHIFT_GRAM_BYTES = 512 << 20  # above this, the patch Gram uses the gather kernel
_MAX_PENDING_SIZES = 8  # input sizes whose job sums InfluenceMoments holds before folding them


def _check_input(x: Any, channels: int) -> torch.Tensor:
    t = as_tensor(x)
    if t.dim() != 4:
        raise ValueError(f"fastprune: input must have shape (N, C, H, W), got {tuple(t.shape)}")
    if t.shape[1] != channels:
        raise ValueError(f"fastprune: input has {t.shape[1]} channels, the accumulator expects {channels}")
    if t.numel() == 0:
        raise ValueError(f"fastprune: input is empty, shape {tuple(t.shape)}")
    check_float(t)
    check_device(t)
    return t


def _raise_nonfinite(bad: int, what: str) -> None:
    if bad:
        raise ValueError(f"fastprune: {what} contains {bad} non-finite values (NaN or Inf); nothing was accumulated")


def _cuda_nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum()) if t.device.type == "cuda" else 0


def _plan_args(plan: ShiftPlan) -> tuple[Any, list[torch.Tensor]]:
    """The plan's arrays (on the host) as kernel arguments, and the tensors that must outlive them."""
    keep = [plan.deltas.contiguous(), plan.cells.contiguous(), plan.cell_ptr.contiguous(), plan.job_delta.contiguous()]
    args = _C.ShiftPlanArgs(keep[0].data_ptr(), int(plan.deltas.shape[0]), keep[1].data_ptr(),
                            int(plan.cells.shape[0]), keep[2].data_ptr(), keep[3].data_ptr(),
                            plan.njobs, plan.max_dy, plan.pad_x)
    return args, keep


@lru_cache(maxsize=64)
def _segments(plan: ShiftPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jobs ordered by pair, the start of each non-empty pair's run, and those pairs."""
    order = np.argsort(plan.pair_index.numpy(), kind="stable")
    pairs_sorted = plan.pair_index.numpy()[order]
    present, starts = np.unique(pairs_sorted, return_index=True)
    return plan.job_index.numpy()[order], starts, present


def _pair_sums(plan: ShiftPlan, out: torch.Tensor) -> torch.Tensor:
    """Per tap pair, the sum of its jobs (npairs, *out.shape[1:]).
    On the CPU a single-threaded numpy gather + segmented sum: the products are tiny and a
    thread pool costs milliseconds per call on a shared machine."""
    width = math.prod(out.shape[1:])
    npairs = plan.pairs.shape[0]
    if out.device.type != "cpu":
        res = plan.scatter.to(out.device) @ out.reshape(plan.njobs, width)
        return res.reshape((npairs,) + tuple(out.shape[1:]))
    res = np.zeros((npairs, width))
    if plan.njobs:
        jobs, starts, present = _segments(plan)
        flat = out.reshape(plan.njobs, width).numpy()
        ends = np.append(starts[1:], len(jobs))
        for p, a, b in zip(present.tolist(), starts.tolist(), ends.tolist()):
            np.sum(flat[jobs[a:b]], axis=0, out=res[p])
    return torch.from_numpy(res.reshape((npairs,) + tuple(out.shape[1:])))


def _geometry_tensor(channels: int, g: ConvGeometry) -> torch.Tensor:
    return torch.tensor([channels] + g.to_list(), dtype=torch.int64)


def _geometry_from(t: Any, what: str) -> tuple[int, ConvGeometry]:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != (11,):
        raise ValueError(f"fastprune: {what}: 'geometry' must be an int64 tensor of 11 values")
    v = [int(e) for e in t]
    if v[0] < 1 or min(v[1:7]) < 1 or min(v[7:]) < 0:
        raise ValueError(f"fastprune: {what}: invalid geometry {v}")
    return v[0], ConvGeometry(*v[1:])


def _scalar_int(state: dict, key: str, what: str) -> int:
    t = state.get(key)
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.numel() != 1 or int(t) < 0:
        raise ValueError(f"fastprune: {what}: '{key}' must be a non-negative int64 scalar tensor")
    return int(t)


def _f64(state: dict, key: str, shape: tuple[int, ...], what: str) -> torch.Tensor:
    t = state.get(key)
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float64 or tuple(t.shape) != shape:
        raise ValueError(f"fastprune: {what}: '{key}' must be a float64 tensor of shape {shape}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"fastprune: {what}: '{key}' holds non-finite values")
    return t.detach().to("cpu", copy=True)


def _check_keys(state: dict, keys: set[str], what: str) -> None:
    if not isinstance(state, dict) or set(state) != keys:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"fastprune: {what}: expected keys {sorted(keys)}, got {got}")


_MAX_DEVICE_PLANS = 8  # device plans (one per batch shape, layout, dtype, alignment) a _JobSums keeps


class _JobSums:
    """Per-job sums (njobs, C) of one input size, accumulated by the kernel in place (it adds
    into its output, and leaves it untouched when the batch holds non-finite values). CPU input:
    the plan's arrays as kernel arguments, built once. CUDA input: the device plan and its table
    (fastprune/influence_plan.h) per batch shape, layout, dtype and 16-byte alignment, built once
    on the host and moved to the device, and a workspace from torch's caching allocator."""

    def __init__(self, plan: ShiftPlan, channels: int, device: torch.device) -> None:
        self.plan = plan
        self.sums = torch.zeros(plan.njobs, channels, dtype=torch.float64, device=device)
        self.out = view(self.sums)
        self._host_args, self._host_keep = _plan_args(plan)
        self._device_plans: dict[tuple, tuple[Any, torch.Tensor]] = {}
        self._scratch = Workspace()

    def _device_plan(self, t: torch.Tensor, v: Any) -> tuple[Any, torch.Tensor]:
        key = (tuple(t.shape), tuple(t.stride()), t.dtype, t.data_ptr() % 16 == 0)  # as the plan sees it
        dp = self._device_plans.get(key)
        if dp is None:
            if len(self._device_plans) >= _MAX_DEVICE_PLANS:
                self._device_plans.clear()
            plan, table = _C.influence_device_plan(v, self._host_args)
            dp = self._device_plans[key] = (plan, torch.tensor(table, dtype=torch.int64).to(t.device))
        return dp

    def add(self, t: torch.Tensor) -> int:
        """Adds batch t's job sums; returns its non-finite count (CUDA: counted by the caller)."""
        v = view(t)
        if t.device.type == "cpu":
            return int(_C.influence_shift(v, self._host_args, self.out))
        plan, table = self._device_plan(t, v)
        ws = self._scratch.get(int(_C.influence_workspace_size(v, plan)), t.device)
        _C.influence_shift_device(v, plan, table.data_ptr(), ws.data_ptr(), ws.numel(), self.out)
        return 0


class InfluenceMoments:
    """Raw spatial auto-moments R_c(t, t') of a feature map as read by one consuming convolution.

    Per batch the kernel only adds its per-job sums into a buffer kept per input size; they are
    folded into the (C, taps, taps) moments when `moments` is read (sums of sums in float64:
    the same totals, without a per-batch fold)."""

    def __init__(self, channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair | str = 0, dilation: IntPair = 1) -> None:
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"fastprune: channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.geometry = ConvGeometry.parse(kernel_size, stride, padding, dilation)
        taps = self.geometry.taps
        self._moments = torch.zeros(channels, taps, taps, dtype=torch.float64)
        self._pending: dict[tuple[int, int, torch.device], _JobSums] = {}
        self.images = 0

    @property
    def moments(self) -> torch.Tensor:
        """(C, taps, taps) float64 R_c(t, t') summed over every batch so far."""
        self._fold_pending()
        return self._moments

    @moments.setter
    def moments(self, value: torch.Tensor) -> None:
        self._pending.clear()
        self._moments = value

    def _fold_pending(self) -> None:
        for acc in self._pending.values():
            self._fold(acc)
        self._pending.clear()

    def _fold(self, acc: _JobSums) -> None:
        plan = acc.plan
        pairs = _pair_sums(plan, acc.sums).cpu()  # (npairs, C)
        ti, tj = plan.pairs[:, 0], plan.pairs[:, 1]
        r = torch.zeros_like(self._moments)
        r[:, ti, tj] = pairs.T
        r[:, tj, ti] = pairs.T
        self._moments += r

    def update(self, x: Any) -> "InfluenceMoments":
        """Add a batch (N, C, H, W) (NCHW or channels_last, fp32/fp16/bf16, CPU or CUDA)."""
        t = _check_input(x, self.channels)
        n, c, h, w = t.shape
        acc = self._pending.get((h, w, t.device))
        if acc is None:
            if len(self._pending) >= _MAX_PENDING_SIZES:
                self._fold_pending()  # memory stays bounded when input sizes keep changing
            acc = _JobSums(shift_plan(self.geometry, h, w), c, t.device)
        _raise_nonfinite(_cuda_nonfinite(t), "input")
        _raise_nonfinite(acc.add(t), "input")  # the kernel left acc.sums unchanged
        self._pending[(h, w, t.device)] = acc
        self.images += int(n)
        return self

    def merge(self, other: "InfluenceMoments") -> "InfluenceMoments":
        """Add another accumulator of the same consumer geometry (exact)."""
        if not isinstance(other, InfluenceMoments):
            raise TypeError(f"fastprune: can only merge InfluenceMoments, got {type(other).__name__}")
        if other.channels != self.channels or other.geometry != self.geometry:
            raise ValueError("fastprune: cannot merge InfluenceMoments of different channels or geometry")
        self.moments += other.moments
        self.images += other.images
        return self

    def influence(self, weight: Any, groups: int = 1) -> torch.Tensor:
        """I_c (C,) float64 for consumer weights (C_out, C/groups, kh, kw)."""
        w = _check_weight(weight, self.channels, groups, self.geometry)
        cout, cg = w.shape[:2]
        wg = w.reshape(groups, cout // groups, cg, self.geometry.taps)
        k = torch.einsum("gols,golt->glst", wg, wg).reshape(self.channels, self.geometry.taps, self.geometry.taps)
        return (k * self.moments).sum(dim=(1, 2))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"moments": self.moments.clone(), "images": torch.tensor([self.images], dtype=torch.int64),
                "geometry": _geometry_tensor(self.channels, self.geometry)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "InfluenceMoments":
        what = "InfluenceMoments state"
        _check_keys(state, {"moments", "images", "geometry"}, what)
        channels, g = _geometry_from(state["geometry"], what)
        obj = cls.__new__(cls)
        obj.channels, obj.geometry = channels, g
        obj._pending = {}
        obj.moments = _f64(state, "moments", (channels, g.taps, g.taps), what)
        obj.images = _scalar_int(state, "images", what)
        return obj


def _check_weight(weight: Any, channels: int, groups: int, g: ConvGeometry | None) -> torch.Tensor:
    w = as_tensor(weight)
    if w.dim() != 4:
        raise ValueError(f"fastprune: consumer weight must have shape (C_out, C/groups, kh, kw), got {tuple(w.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"fastprune: groups must be a positive int, got {groups!r}")
    cout, cg = w.shape[:2]
    if cout % groups:
        raise ValueError(f"fastprune: {cout} output channels are not divisible by groups={groups}")
    if cg * groups != channels:
        raise ValueError(f"fastprune: consumer weight reads {cg}*{groups} = {cg * groups} channels, the input has {channels}")
    if g is not None and tuple(w.shape[2:]) != (g.kh, g.kw):
        raise ValueError(f"fastprune: weight kernel {tuple(w.shape[2:])} differs from the accumulator's {(g.kh, g.kw)}")
    w = w.to("cpu", torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"fastprune: consumer weight contains {int((~torch.isfinite(w)).sum())} non-finite values")
    return w


def conv_influence(x: Any, weight: Any, stride: IntPair = 1, padding: IntPair | str = 0,
                   dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """I_c = sum_n sum_o ||conv(A_c, W[o, c])||^2 (C,) float64, from the shifted auto-moments."""
    t = as_tensor(x)
    if t.dim() != 4:
        raise ValueError(f"fastprune: input must have shape (N, C, H, W), got {tuple(t.shape)}")
    w = _check_weight(weight, t.shape[1], groups, None)
    acc = InfluenceMoments(int(t.shape[1]), tuple(w.shape[2:]), stride, padding, dilation)
    return acc.update(t).influence(w, groups)


def _sample_spec(sample: Sample) -> tuple[float, int]:
    """(value, kind): kind 0 all positions, 1 a count per image, 2 a fraction per image."""
    if sample is None:
        return 0.0, 0
    if isinstance(sample, bool):
        raise TypeError("fastprune: sample must be None, an int count or a float fraction")
    if isinstance(sample, int):
        if sample < 1:
            raise ValueError(f"fastprune: sample count must be >= 1, got {sample}")
        return float(sample), 1
    if isinstance(sample, float):
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"fastprune: sample fraction must be in (0, 1], got {sample}")
        return sample, 2
    raise TypeError(f"fastprune: sample must be None, an int count or a float fraction, got {sample!r}")


def sample_positions(first_image: int, images: int, positions: int, sample: Sample, seed: int) -> torch.Tensor:
    """(M, 2) int64 (image in batch, output index) drawn per image by a generator seeded from
    (seed, global image index): deterministic for a given stream of images. A count larger than
    the image's positions takes them all."""
    value, kind = _sample_spec(sample)
    if kind == 0:
        m = positions
    elif kind == 1:
        m = min(int(value), positions)
    else:
        m = max(1, min(positions, int(round(value * positions))))
    rows = []
    for i in range(images):
        if m == positions:
            q = torch.arange(positions, dtype=torch.int64)
        else:
            gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + first_image + i) % (1 << 63))
            q = torch.randperm(positions, generator=gen)[:m].sort().values
        rows.append(torch.stack([torch.full_like(q, i), q], dim=1))
    return torch.cat(rows)


class PatchGram:
    """sum U U^T over images and (sampled) output positions, U the consumer's im2col patch."""

    def __init__(self, channels: int, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair | str = 0,
                 dilation: IntPair = 1, sample: Sample = None, seed: int = 0) -> None:
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"fastprune: channels must be a positive int, got {channels!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"fastprune: seed must be a non-negative int, got {seed!r}")
        _sample_spec(sample)
        self.channels = channels
        self.geometry = ConvGeometry.parse(kernel_size, stride, padding, dilation)
        self.sample = sample
        self.seed = seed
        d = channels * self.geometry.taps
        self._gram = torch.zeros(d, d, dtype=torch.float64)
        self._jobs: torch.Tensor | None = None  # reused kernel output (no page faults per batch)
        self._scratch = Workspace()
        self.count = 0
        self.images = 0

    @property
    def gram(self) -> torch.Tensor:
        """The symmetric (C*kh*kw)^2 float64 Gram."""
        return self._gram.clone()

    def _job_buffer(self, size: int) -> torch.Tensor:
        if self._jobs is None or self._jobs.numel() < size:
            self._jobs = torch.from_numpy(np.zeros(size))
        buf = self._jobs[:size]
        buf.numpy()[...] = 0.0  # single-threaded fill
        return buf

    def _use_shift(self, t: torch.Tensor, plan: ShiftPlan) -> bool:
        if os.environ.get("FASTPRUNE_PATCH_GRAM") == "gather" or self.sample is not None or t.device.type != "cpu":
            return False
        threads = max(1, int(_C.openmp_max_threads()))
        cpad = -(-self.channels // 16) * 16
        # thread tables + the reduced table in C++ + the job buffer here
        return plan.njobs * cpad * cpad * 8 * (threads + 2) <= _SHIFT_GRAM_BYTES

    def _gather(self, t: torch.Tensor, geom: Any, positions: int, out: torch.Tensor) -> int:
        """Adds the upper triangle of the batch's (sampled) patch Gram into out; returns the number
        of positions. CUDA without sampling reads every output position in order (no position
        array), with a workspace from torch's caching allocator."""
        n = int(t.shape[0])
        v = view(t)
        every = t.device.type == "cuda" and self.sample is None
        pos = None if every else sample_positions(self.images, n, positions, self.sample, self.seed).to(t.device)
        npos = n * positions if every else int(pos.shape[0])
        ptr = 0 if every else pos.data_ptr()
        if t.device.type == "cuda":
            ws = self._scratch.get(int(_C.gram_gather_workspace_size(v, geom, npos, every)), t.device)
            _C.gram_gather_device(v, geom, ptr, npos, ws.data_ptr(), ws.numel(), view(out))
        else:
            _raise_nonfinite(int(_C.gram_gather(v, geom, ptr, npos, view(out))), "input")
        return npos

    def update(self, x: Any) -> "PatchGram":
        """Add a batch (N, C, H, W) (NCHW or channels_last, fp32/fp16/bf16, CPU or CUDA)."""
        t = _check_input(x, self.channels)
        n, c, h, w = t.shape
        g = self.geometry
        ho, wo = g.out_size(h, w)
        _raise_nonfinite(_cuda_nonfinite(t), "input")
        plan = shift_plan(g, h, w)
        d = c * g.taps
        if self._use_shift(t, plan):
            out = self._job_buffer(plan.njobs * c * c).view(plan.njobs, c, c)
            args, keep = _plan_args(plan)
            _raise_nonfinite(int(_C.gram_shift(view(t), args, view(out))), "input")
            del keep
            pairs = _pair_sums(plan, out).numpy()  # (npairs, C, C): [c, c'] of tap pair (t, t')
            ti, tj = plan.pairs[:, 0].numpy(), plan.pairs[:, 1].numpy()
            off = ti != tj
            g4 = self._gram.numpy().reshape(c, g.taps, c, g.taps)  # a view: updated in place
            g4[:, ti, :, tj] += pairs
            g4[:, tj[off], :, ti[off]] += pairs[off].transpose(0, 2, 1)
            used = n * ho * wo
        else:
            geom = _C.PatchGeom(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, ho, wo)
            out = torch.zeros(d, d, dtype=torch.float64, device=t.device)
            used = self._gather(t, geom, ho * wo, out)
            upper = out.cpu().numpy()  # the kernel fills j >= i
            self._gram.numpy()[...] += np.triu(upper) + np.triu(upper, 1).T
        self.count += int(used)
        self.images += int(n)
        return self

    def merge(self, other: "PatchGram") -> "PatchGram":
        """Add another accumulator of the same geometry and sampling (exact)."""
        if not isinstance(other, PatchGram):
            raise TypeError(f"fastprune: can only merge PatchGram, got {type(other).__name__}")
        if (other.channels, other.geometry, _sample_spec(other.sample), other.seed) != (
                self.channels, self.geometry, _sample_spec(self.sample), self.seed):
            raise ValueError("fastprune: cannot merge PatchGram of different channels, geometry or sampling")
        self._gram += other._gram
        self.count += other.count
        self.images += other.images
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        value, kind = _sample_spec(self.sample)
        return {"gram": self.gram, "count": torch.tensor([self.count], dtype=torch.int64),
                "images": torch.tensor([self.images], dtype=torch.int64),
                "geometry": _geometry_tensor(self.channels, self.geometry),
                "sample": torch.tensor([value, float(kind)], dtype=torch.float64),
                "seed": torch.tensor([self.seed], dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PatchGram":
        what = "PatchGram state"
        _check_keys(state, {"gram", "count", "images", "geometry", "sample", "seed"}, what)
        channels, g = _geometry_from(state["geometry"], what)
        s = state["sample"]
        if not isinstance(s, torch.Tensor) or s.dtype != torch.float64 or s.shape != (2,):
            raise ValueError(f"fastprune: {what}: 'sample' must be a float64 tensor of 2 values")
        value, kind = float(s[0]), int(s[1])
        if kind not in (0, 1, 2) or float(s[1]) != kind:
            raise ValueError(f"fastprune: {what}: invalid sample kind {float(s[1])}")
        sample: Sample = None if kind == 0 else (int(value) if kind == 1 else value)
        if kind == 1 and float(int(value)) != value:
            raise ValueError(f"fastprune: {what}: sample count {value} is not an integer")
        _sample_spec(sample)
        d = channels * g.taps
        gram = _f64(state, "gram", (d, d), what)
        if not torch.equal(gram, gram.T):
            raise ValueError(f"fastprune: {what}: 'gram' is not symmetric")
        obj = cls.__new__(cls)
        obj.channels, obj.geometry, obj.sample = channels, g, sample
        obj.seed = _scalar_int(state, "seed", what)
        obj._gram = gram
        obj._jobs = None
        obj._scratch = Workspace()
        obj.count = _scalar_int(state, "count", what)
        obj.images = _scalar_int(state, "images", what)
        return obj


def patch_gram(x: Any, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair | str = 0,
               dilation: IntPair = 1, sample: Sample = None, seed: int = 0) -> tuple[torch.Tensor, int]:
    """(sum U U^T, number of positions) over images and (sampled) output positions of x."""
    t = as_tensor(x)
    if t.dim() != 4:
        raise ValueError(f"fastprune: input must have shape (N, C, H, W), got {tuple(t.shape)}")
    acc = PatchGram(int(t.shape[1]), kernel_size, stride, padding, dilation, sample, seed)
    acc.update(t)
    return acc.gram, acc.count


__all__: Sequence[str] = ["InfluenceMoments", "PatchGram", "conv_influence", "patch_gram", "sample_positions"]
