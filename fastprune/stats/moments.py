"""Per-channel moments of feature maps, accumulated in one streaming pass by fused kernels.

`ChannelMoments(C)` keeps, per channel, the sample count, mean, centred co-moment matrix (or its
diagonal), sum |x|, zero count, min, max, non-finite count and the per-image spatial std summed
over images (msd). `update(x)` runs the compiled kernel on one batch (CPU, or CUDA when built)
and merges the batch into the totals with Chan's exact pairwise update in float64; `merge`
combines accumulators the same way, so parts merged equal the whole for any split.

Input: (N, C, H, W) in NCHW-contiguous or channels_last memory, or (N, C); float32, float16,
bfloat16 or float64 (float64 is accumulated in float64 throughout on the CPU, so offsets of 1e8 x
the std and magnitudes up to ~1e150 keep float64 accuracy; the CUDA back-end rounds it to float32;
half types convert to float32, never accumulated in half precision). Finite values whose sums of
squares overflow (|x| above ~1e19 for float32 input) are refused like non-finite ones, naming the
channels (`NonFiniteInput.overflow`). Samples are pixels (4-D) or rows (2-D). Any other memory layout
is copied to contiguous memory first. Anything speaking DLPack (numpy, cupy) is accepted.

Non-finite values: `update` raises ValueError naming how many NaN/Inf values there are and in
which channels, and leaves the state unchanged. With `allow_nonfinite=True` a sample (pixel or
row) holding a non-finite value in any channel is dropped from every statistic (all channels
keep one common count, so the covariance stays a covariance), and the non-finite values are
counted per channel in `.nonfinite`.

On CUDA the state lives on the latest input's device and merges are stream-ordered torch ops; checking
for non-finite values reads one count back to the host per update (a stream synchronisation).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .._ext import _C
from .._views import as_tensor, check_device, check_float, view
from .workspace import Workspace

_F64 = torch.float64
_STATE_KEYS = {
    "channels": (torch.int64, ()),
    "covariance": (torch.int64, ()),
    "count": (torch.int64, ()),
    "images": (torch.int64, ()),
    "mean": (_F64, ("C",)),
    "m2": (_F64, None),  # (C, C) with covariance, else (C,)
    "abs_sum": (_F64, ("C",)),
    "zero_count": (torch.int64, ("C",)),
    "min": (_F64, ("C",)),
    "max": (_F64, ("C",)),
    "nonfinite": (torch.int64, ("C",)),
    "msd_sum": (_F64, ("C",)),
}


def _memory_ok(t: torch.Tensor) -> bool:
    """True when the kernel reads `t` in place (NCHW / channels_last; rows or columns for 2-D)."""
    if t.dim() == 4:
        return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)
    return t.is_contiguous() or t.t().is_contiguous()


# torch runs an element-wise CPU op on the calling thread below this many elements (its grain
# size, 32768); above, it wakes its thread pool, which on a busy machine can cost a whole time
# slice per op (measured: 12-16 ms for one C=512 merge on the shared 2-core box, 0.3 ms in blocks)
_SERIAL_ELEMENTS = 32767


def _add_comoment(m2: torch.Tensor, batch_m2: torch.Tensor, delta: torch.Tensor, w: float) -> None:
    """m2 += batch_m2 + w * outer(delta, delta) in place (Chan's co-moment merge), in row blocks
    small enough to stay on this thread and in cache on the CPU. The outer product is of
    sqrt(w) * delta with itself, so m2 stays exactly symmetric (a_i a_j == a_j a_i)."""
    C = m2.shape[0]
    a = delta * math.sqrt(w)
    rows = C if m2.device.type != "cpu" else max(1, _SERIAL_ELEMENTS // C)
    for i in range(0, C, rows):
        block = m2[i:i + rows]
        block.add_(batch_m2[i:i + rows]).addr_(a[i:i + rows], a)


class NonFiniteInput(ValueError):
    """`update` refused a batch: NaN/Inf values in it, or (`overflow`) finite values too large
    for the sums of squares. The accumulator is unchanged."""

    def __init__(self, message: str, overflow: bool = False) -> None:
        super().__init__(message)
        self.overflow = overflow


def _channels(chans: list[int]) -> str:
    return ", ".join(map(str, chans[:10])) + (", ..." if len(chans) > 10 else "")


class ChannelMoments:
    """Mergeable per-channel statistics (and C x C covariance) of a stream of batches."""

    def __init__(self, channels: int, covariance: bool = True) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"fastprune: channels must be a positive int, got {channels!r}")
        self.channels = int(channels)
        self.covariance = bool(covariance)
        self._device = torch.device("cpu")
        self._buf: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None  # see _buffer
        self._ws = Workspace()  # the CUDA kernels' scratch
        self._reset()

    # ---------------------------------------------------------------- state
    def _reset(self) -> None:
        C, d = self.channels, self._device
        self._n = 0
        self._images = 0
        self._mean = torch.zeros(C, dtype=_F64, device=d)
        self._m2 = torch.zeros((C, C) if self.covariance else (C,), dtype=_F64, device=d)
        self._abs = torch.zeros(C, dtype=_F64, device=d)
        self._zeros = torch.zeros(C, dtype=_F64, device=d)
        self._min = torch.full((C,), float("inf"), dtype=_F64, device=d)
        self._max = torch.full((C,), float("-inf"), dtype=_F64, device=d)
        self._nonfinite = torch.zeros(C, dtype=_F64, device=d)
        self._msd = torch.zeros(C, dtype=_F64, device=d)

    def _to(self, device: torch.device) -> None:
        """Moves the state to `device` (that of the data being accumulated)."""
        self._device = device
        for k in ("_mean", "_m2", "_abs", "_zeros", "_min", "_max", "_nonfinite", "_msd"):
            setattr(self, k, getattr(self, k).to(device))

    def _absorb(self, n: int, images: int, mean: torch.Tensor, m2: torch.Tensor, abs_sum: torch.Tensor,
                zeros: torch.Tensor, mn: torch.Tensor, mx: torch.Tensor, nonfinite: torch.Tensor,
                msd_sum: torch.Tensor) -> None:
        """Chan's exact pairwise merge of another part into this state (float64, in place: the
        state's tensors are its own, never shared with a caller)."""
        d = self._device
        mean, m2, abs_sum, zeros, mn, mx, nonfinite, msd_sum = (
            t.to(d, _F64) for t in (mean, m2, abs_sum, zeros, mn, mx, nonfinite, msd_sum))
        self._nonfinite.add_(nonfinite)
        self._msd.add_(msd_sum)
        self._images += images
        if n == 0:
            return
        if self._n == 0:
            self._mean.copy_(mean)
            self._m2.copy_(m2)
        else:
            na, nb = float(self._n), float(n)
            delta = mean - self._mean
            if self.covariance:
                _add_comoment(self._m2, m2, delta, na * nb / (na + nb))
            else:
                self._m2.add_(m2).addcmul_(delta, delta, value=na * nb / (na + nb))
            self._mean.add_(delta, alpha=nb / (na + nb))
        self._n += n
        self._abs.add_(abs_sum)
        self._zeros.add_(zeros)
        torch.minimum(self._min, mn, out=self._min)
        torch.maximum(self._max, mx, out=self._max)

    # ---------------------------------------------------------------- update
    def _buffer(self, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The kernel's float64 output and its named views, kept between batches (no allocation
        per update); `_absorb` consumes the views before the next kernel call overwrites them."""
        if self._buf is None or self._buf[0].device != device:
            C, cov = self.channels, self.covariance
            out = torch.empty(_C.moments_out_size(C, cov), dtype=_F64, device=device)
            m2 = out[2 + 7 * C:]
            parts = {
                "mean": out[2:2 + C], "abs_sum": out[2 + C:2 + 2 * C], "zeros": out[2 + 2 * C:2 + 3 * C],
                "mn": out[2 + 3 * C:2 + 4 * C], "mx": out[2 + 4 * C:2 + 5 * C],
                "nonfinite": out[2 + 5 * C:2 + 6 * C], "msd_sum": out[2 + 6 * C:2 + 7 * C],
                "m2": m2.view(C, C) if cov else m2,
            }
            self._buf = (out, parts)
        return self._buf

    def _workspace(self, v: Any, t: torch.Tensor) -> torch.Tensor | None:
        """The CUDA kernels' scratch for `t` (stats.workspace); None on the CPU."""
        need = _C.moments_workspace_size(v, self.covariance)
        return self._ws.get(need, t.device) if need else None

    def _kernel(self, t: torch.Tensor) -> dict[str, Any]:
        """One kernel pass over a checked tensor -> the batch's partial statistics."""
        out, parts = self._buffer(t.device)
        v = view(t)
        ws = self._workspace(v, t)
        _C.moments_update(v, out.data_ptr(), out.numel(), self.covariance,
                          0 if ws is None else ws.data_ptr(), 0 if ws is None else ws.numel())
        four = t.dim() == 4
        return {"n": t.shape[0] * (t.shape[2] * t.shape[3] if four else 1),
                "images": t.shape[0] if four else 0, **parts}

    def _checked(self, x: Any) -> torch.Tensor:
        t = as_tensor(x)
        check_float(t)
        check_device(t)
        if t.dim() not in (2, 4):
            raise ValueError(
                f"fastprune: moments expect (N, C, H, W) or (N, C) input, got shape {tuple(t.shape)}")
        if t.shape[1] != self.channels:
            raise ValueError(
                f"fastprune: input has {t.shape[1]} channels (shape {tuple(t.shape)}) but this "
                f"ChannelMoments accumulates {self.channels}")
        return t if _memory_ok(t) else t.contiguous()

    def update(self, x: Any, allow_nonfinite: bool = False) -> "ChannelMoments":
        """Accumulates one batch: (N, C, H, W) or (N, C). Returns self."""
        t = self._checked(x)
        if t.device != self._device:  # the (small) state follows the data
            self._to(t.device)
        b = self._kernel(t)
        nonfinite = b["nonfinite"]
        m2 = torch.diagonal(b["m2"]) if self.covariance else b["m2"]
        # one read-back for both checks: non-finite input values, and finite ones whose sums
        # overflowed (|off-diagonal| <= sqrt of the diagonal's, so the diagonal is enough)
        total, overflowed = torch.stack([nonfinite.sum(), (~torch.isfinite(
            torch.cat([b["mean"], m2, b["abs_sum"]]))).sum().to(_F64)]).tolist()
        if total > 0:
            if not allow_nonfinite:
                chans = torch.nonzero(nonfinite.cpu()).flatten().tolist()
                raise NonFiniteInput(
                    f"fastprune: input holds {int(total)} non-finite values (NaN/Inf) in channel(s) "
                    f"{_channels(chans)}; the accumulator is unchanged (pass allow_nonfinite=True to drop "
                    "those samples and count them)")
            self._update_finite(t, nonfinite)
        elif overflowed:
            self._raise_overflow(t, b)
        else:
            self._absorb(**b)
        return self

    def _raise_overflow(self, t: torch.Tensor, b: dict[str, Any]) -> None:
        m2 = torch.diagonal(b["m2"]) if self.covariance else b["m2"]
        bad = (~torch.isfinite(b["mean"]) | ~torch.isfinite(m2) | ~torch.isfinite(b["abs_sum"])).cpu()
        chans = torch.nonzero(bad).flatten().tolist()
        top = float(t.detach().abs().amax())
        hint = ("float32 sums of squares overflow above |x| ~ 1e19: pass float64 input"
                if t.dtype != _F64 else "float64 sums of squares overflow above |x| ~ 1e154")
        raise NonFiniteInput(
            f"fastprune: finite input values (largest |x| = {top:.3g}) overflow the accumulators in "
            f"channel(s) {_channels(chans)} ({hint}); the accumulator is unchanged", overflow=True)

    def _update_finite(self, t: torch.Tensor, nonfinite: torch.Tensor) -> None:
        """Accumulates the samples of `t` whose every channel is finite; counts the rest."""
        zero = torch.zeros(self.channels, dtype=_F64, device=self._device)
        inf = torch.full_like(zero, float("inf"))
        m2 = torch.zeros_like(self._m2)
        self._absorb(0, 0, zero, m2, zero, zero, inf, -inf, nonfinite, zero)
        if t.dim() == 2:
            keep = torch.isfinite(t).all(1)
            if bool(keep.any()):
                b = self._kernel(t[keep].contiguous())
                b["nonfinite"] = zero
                self._absorb(**b)
            return
        C = self.channels
        keep = torch.isfinite(t).all(1).reshape(t.shape[0], -1)  # (N, H*W)
        for i in range(t.shape[0]):
            if bool(keep[i].any()):
                pix = t[i].reshape(C, -1)[:, keep[i]].contiguous()
                b = self._kernel(pix.view(1, C, 1, -1))
                b["nonfinite"] = zero
                self._absorb(**b)

    def merge(self, other: "ChannelMoments") -> "ChannelMoments":
        """Adds another accumulator's data to this one (exact Chan merge). Returns self."""
        if not isinstance(other, ChannelMoments):
            raise TypeError(f"fastprune: can only merge a ChannelMoments, got {type(other).__name__}")
        if other.channels != self.channels or other.covariance != self.covariance:
            raise ValueError(
                f"fastprune: cannot merge ChannelMoments(channels={other.channels}, covariance="
                f"{other.covariance}) into ChannelMoments(channels={self.channels}, covariance="
                f"{self.covariance})")
        if self._n == 0 and self._images == 0 and other._device != self._device:
            self._to(other._device)  # otherwise other's state is copied to this device
        self._absorb(other._n, other._images, other._mean, other._m2, other._abs, other._zeros,
                     other._min, other._max, other._nonfinite, other._msd)
        return self

    # ---------------------------------------------------------------- read-outs
    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu", _F64).clone()

    @property
    def count(self) -> torch.Tensor:
        """Samples (pixels, or rows of 2-D input) seen per channel."""
        return torch.full((self.channels,), float(self._n), dtype=_F64)

    @property
    def images(self) -> int:
        """(N, C, H, W) inputs seen, counted per image (0 for 2-D input): the independent draws
        behind the pixel samples (a crop of a tiled input counts as one)."""
        return int(self._images)

    @property
    def mean(self) -> torch.Tensor:
        return self._out(self._mean) if self._n else self._nan()

    @property
    def var(self) -> torch.Tensor:
        """Unbiased variance (n-1), as torch.var."""
        m2 = torch.diagonal(self._m2) if self.covariance else self._m2
        return self._out(m2 / (self._n - 1)) if self._n > 1 else self._nan()

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()

    @property
    def abs_mean(self) -> torch.Tensor:
        return self._out(self._abs / self._n) if self._n else self._nan()

    @property
    def zero_fraction(self) -> torch.Tensor:
        """Fraction of exact zeros (APoZ)."""
        return self._out(self._zeros / self._n) if self._n else self._nan()

    @property
    def min(self) -> torch.Tensor:
        return self._out(self._min) if self._n else self._nan()

    @property
    def max(self) -> torch.Tensor:
        return self._out(self._max) if self._n else self._nan()

    @property
    def nonfinite(self) -> torch.Tensor:
        """Non-finite values (NaN/Inf) seen per channel (int64)."""
        return self._nonfinite.detach().to("cpu").to(torch.int64)

    @property
    def msd(self) -> torch.Tensor:
        """Mean over images of each channel's spatial std (n-1 over H x W): needs 4-D input."""
        if self._images == 0:
            raise ValueError("fastprune: msd is defined only after (N, C, H, W) input (it averages "
                             "per-image spatial std); this accumulator has seen no images")
        return self._out(self._msd / self._images)

    @property
    def cov(self) -> torch.Tensor:
        """C x C covariance (n-1), as torch.cov of the (C, samples) matrix."""
        if not self.covariance:
            raise ValueError("fastprune: this ChannelMoments was built with covariance=False")
        return self._out(self._m2 / (self._n - 1)) if self._n > 1 else self._nan((self.channels,) * 2)

    @property
    def corr(self) -> torch.Tensor:
        """C x C correlation, as torch.corrcoef (NaN rows for constant channels)."""
        cov = self.cov
        d = torch.diagonal(cov).sqrt()
        return (cov / torch.outer(d, d)).clamp(-1.0, 1.0)

    def _nan(self, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        return torch.full(shape or (self.channels,), float("nan"), dtype=_F64)

    # ---------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, torch.Tensor]:
        """All state as CPU float64/int64 tensors (safetensors-ready; see from_state_dict)."""
        i64 = torch.int64
        return {
            "channels": torch.tensor(self.channels, dtype=i64),
            "covariance": torch.tensor(int(self.covariance), dtype=i64),
            "count": torch.tensor(self._n, dtype=i64),
            "images": torch.tensor(self._images, dtype=i64),
            "mean": self._out(self._mean),
            "m2": self._out(self._m2),
            "abs_sum": self._out(self._abs),
            "zero_count": self._zeros.detach().to("cpu").to(i64),
            "min": self._out(self._min),
            "max": self._out(self._max),
            "nonfinite": self._nonfinite.detach().to("cpu").to(i64),
            "msd_sum": self._out(self._msd),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, torch.Tensor]) -> "ChannelMoments":
        """Rebuilds an accumulator from `state_dict()` output, validating every entry."""
        if not isinstance(d, dict):
            raise TypeError(f"fastprune: expected a dict of tensors, got {type(d).__name__}")
        missing = sorted(set(_STATE_KEYS) - set(d))
        extra = sorted(set(d) - set(_STATE_KEYS))
        if missing or extra:
            raise ValueError(f"fastprune: ChannelMoments state has missing keys {missing} / unknown keys {extra}")
        for k, (dtype, _) in _STATE_KEYS.items():
            if not isinstance(d[k], torch.Tensor) or d[k].dtype != dtype:
                raise ValueError(f"fastprune: ChannelMoments state '{k}' must be a {dtype} tensor")
        C, cov = int(d["channels"]), int(d["covariance"])
        if d["channels"].dim() != 0 or C < 1 or cov not in (0, 1):
            raise ValueError(f"fastprune: ChannelMoments state has channels={C}, covariance={cov}")
        for k, (_, shape) in _STATE_KEYS.items():
            want = (C, C) if (k == "m2" and cov) else (C,) if (k == "m2" or shape == ("C",)) else ()
            if tuple(d[k].shape) != want:
                raise ValueError(f"fastprune: ChannelMoments state '{k}' has shape {tuple(d[k].shape)}, "
                                 f"expected {want}")
        n, images = int(d["count"]), int(d["images"])
        if n < 0 or images < 0 or bool((d["zero_count"] < 0).any()) or bool((d["nonfinite"] < 0).any()):
            raise ValueError("fastprune: ChannelMoments state has negative counts")
        if bool((d["zero_count"] > n).any()):
            raise ValueError("fastprune: ChannelMoments state counts more zeros than samples")
        if n > 0 and bool((d["min"] > d["max"]).any()):
            raise ValueError("fastprune: ChannelMoments state has min > max")
        m = cls(C, covariance=bool(cov))
        m._n, m._images = n, images
        m._mean, m._m2, m._abs = d["mean"].clone(), d["m2"].clone(), d["abs_sum"].clone()
        m._zeros = d["zero_count"].to(_F64)
        m._min, m._max = d["min"].clone(), d["max"].clone()
        m._nonfinite = d["nonfinite"].to(_F64)
        m._msd = d["msd_sum"].clone()
        return m

    def __repr__(self) -> str:
        return (f"ChannelMoments(channels={self.channels}, covariance={self.covariance}, "
                f"count={self._n}, images={self._images})")


def channel_moments(x: Any, covariance: bool = True, allow_nonfinite: bool = False) -> ChannelMoments:
    """One-shot moments of a batch (N, C, H, W) or (N, C)."""
    t = as_tensor(x)
    if t.dim() not in (2, 4):
        raise ValueError(
            f"fastprune: moments expect (N, C, H, W) or (N, C) input, got shape {tuple(t.shape)}")
    return ChannelMoments(int(t.shape[1]), covariance=covariance).update(t, allow_nonfinite=allow_nonfinite)
