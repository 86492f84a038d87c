"""Surgery: apply a removal physically (prune), virtually (masked), and replay it (save/load)."""
from .mask import Masked, masked
from .prune import prune
from .replay import load_pruned, save_pruned

__all__ = ["Masked", "load_pruned", "masked", "prune", "save_pruned"]
