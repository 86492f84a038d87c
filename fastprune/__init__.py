"""fastprune: data-driven filter pruning for convolutional (segmentation) networks."""
from ._ext import build_info, cpu_isa, cuda_available, set_cpu_isa

__version__ = "0.1.0"

__all__ = ["build_info", "cpu_isa", "cuda_available", "set_cpu_isa", "__version__"]
