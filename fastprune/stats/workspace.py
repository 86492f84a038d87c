"""Scratch memory of the CUDA kernels, from torch's caching allocator (its limits apply, nothing is
allocated in C++), kept and reused while the stream stays the same and it is large enough."""
from __future__ import annotations

from typing import Any

import torch


class Workspace:
    def __init__(self) -> None:
        self._ws: tuple[Any, torch.Tensor] | None = None  # (stream, bytes)

    def get(self, nbytes: int, device: torch.device) -> torch.Tensor:
        """At least `nbytes` (uint8) on `device`, for use on its current stream."""
        stream = torch.cuda.current_stream(device)
        ws = self._ws
        if ws is None or ws[0] != stream or ws[1].numel() < nbytes:
            self._ws = ws = (stream, torch.empty(max(nbytes, 16), dtype=torch.uint8, device=device))
        return ws[1]
