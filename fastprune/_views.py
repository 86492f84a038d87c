"""Hands arrays to the compiled core as borrowed views (pointer, dtype, shape, strides, device, stream).

Anything that speaks DLPack (torch, numpy, cupy) is accepted; the C++ side never links libtorch.
"""
from __future__ import annotations

from typing import Any

import torch

from ._ext import _C

_DTYPES = {
    torch.float32: _C.DType.f32,
    torch.float16: _C.DType.f16,
    torch.bfloat16: _C.DType.bf16,
    torch.float64: _C.DType.f64,
}


def as_tensor(x: Any) -> torch.Tensor:
    """A torch tensor sharing memory with `x` (torch tensor or any DLPack producer)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if hasattr(x, "__dlpack__"):
        strides = getattr(x, "strides", None)  # numpy: negative strides abort DLPack's import
        if isinstance(strides, tuple) and any(s < 0 for s in strides):
            raise ValueError("fastprune: arrays with negative strides (a reversed view such as a[::-1]) cannot be "
                             "shared without a copy: pass a contiguous copy (numpy.ascontiguousarray)")
        try:
            return torch.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f"fastprune: this {type(x).__name__} cannot be shared through DLPack ({exc}): "
                             "pass a contiguous copy") from None
    raise TypeError(f"fastprune: expected a torch tensor or a DLPack array, got {type(x).__name__}")


def check_float(t: torch.Tensor, what: str = "input") -> None:
    """TypeError unless `t` is fp32, fp16, bf16 or fp64."""
    if t.dtype not in _DTYPES:
        raise TypeError(
            f"fastprune: {what} has dtype {t.dtype}; expected float32, float16, bfloat16 or float64"
        )


def check_device(t: torch.Tensor, what: str = "input") -> None:
    """ValueError for devices the build cannot run on."""
    if t.device.type == "cpu":
        return
    if t.device.type == "cuda":
        if not _C.cuda_built():
            raise ValueError(
                f"fastprune: {what} is a CUDA tensor but this build of fastprune has no CUDA "
                "back-end (rebuild with nvcc available, FASTPRUNE_BUILD_CUDA=1)"
            )
        return
    raise ValueError(f"fastprune: {what} is on device '{t.device}'; only cpu and cuda are supported")


def view(t: torch.Tensor) -> Any:
    """The `_C.View` of a tensor: no copy; the tensor must outlive the call."""
    check_float(t)
    check_device(t)
    if t.dim() > 4:
        raise ValueError(f"fastprune: arrays of at most 4 dimensions, got shape {tuple(t.shape)}")
    if t.device.type == "cuda":
        dev, idx = _C.Device.cuda, t.device.index or 0
        stream = torch.cuda.current_stream(t.device).cuda_stream
    else:
        dev, idx, stream = _C.Device.cpu, 0, 0
    return _C.View(t.data_ptr(), _DTYPES[t.dtype], list(t.shape), list(t.stride()), dev, idx, stream)
