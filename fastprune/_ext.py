"""Loads the compiled core and says what it was built with and what runs here."""
from __future__ import annotations

import os
from typing import Any

try:
    from . import _C  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastprune's compiled extension fastprune._C is missing or does not load "
        f"({exc}). Install with `pip install .` (it compiles the C++/CUDA core) or, in a "
        "source checkout, `python setup.py build_ext --inplace`."
    ) from exc


def cuda_available() -> bool:
    """True when the CUDA back-end was compiled in and a CUDA device is visible to it."""
    return bool(_C.cuda_built()) and _C.cuda_device_count() > 0


def cpu_isa() -> str:
    """The CPU instruction-set variant the kernels use now (baseline, avx2, avx512)."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> None:
    """Force a CPU ISA variant for this process ('auto' restores the best one)."""
    _C.set_cpu_isa(name)


def build_info() -> dict[str, Any]:
    """What the extension was built with and what it finds at run time."""
    return {
        "version": _C.version(),
        "compiler": _C.compiler(),
        "cpu_isas_compiled": _C.compiled_cpu_isas().split(","),
        "cpu_isa_best": _C.best_cpu_isa(),
        "cpu_isa_active": _C.cpu_isa(),
        "cpu_isa_env": os.environ.get("FASTPRUNE_CPU_ISA"),
        "openmp_max_threads": _C.openmp_max_threads(),
        "cuda_built": bool(_C.cuda_built()),
        "cuda_archs": _C.cuda_archs().split(";") if _C.cuda_built() else [],
        "cuda_runtime_version": _C.cuda_runtime_version(),
        "cuda_device_count": _C.cuda_device_count(),
        "cuda_available": cuda_available(),
    }
