"""Reference segmentation / classification networks, written here (no torchvision)."""
from .registry import create
from .unet import UNet, choose_levels, level_layers, level_redundancy, remove_levels

__all__ = ["UNet", "create", "remove_levels", "level_layers", "level_redundancy", "choose_levels"]
