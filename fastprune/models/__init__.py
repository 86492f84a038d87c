"""Reference segmentation / classification networks, written here (no torchvision)."""
from .registry import create
from .unet import UNet, level_layers, remove_levels

__all__ = ["UNet", "create", "remove_levels", "level_layers"]
