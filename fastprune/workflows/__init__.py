"""Workflows composed from the layers below: layer-by-layer pruning with reconstruction,
iterative compression (`compress`) and the methods x budgets x seeds grid (`compare`)."""
from .compression import CompressConfig, compress

__all__ = ["CompressConfig", "compress"]
