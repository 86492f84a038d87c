"""Data: synthetic aerial scenes, Inria / AIRS / CamVid loaders, tiling, ``open_dataset``."""
from .sources import SyntheticSource
from .spec import open_dataset, parse_spec
from .synthetic import generate_scene
from .tiles import RandomCrops, Scenes, SlidingTiles, window_starts

__all__ = ["open_dataset", "parse_spec", "generate_scene", "SyntheticSource", "Scenes",
           "RandomCrops", "SlidingTiles", "window_starts"]
