"""``create(name, **options)``: the CLI's model names -> a model."""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

# CLI name -> (module, class)
_MODELS = {
    "unet": ("fastprune.models.unet", "UNet"),
    "segnet": ("fastprune.models.segnet", "SegNet"),
    "deeplabv3plus": ("fastprune.models.deeplab", "DeepLabV3Plus"),
    "ternausnet": ("fastprune.models.ternausnet", "TernausNet"),
    "vgg16": ("fastprune.models.vgg", "VGG16"),
}


def names() -> list[str]:
    return sorted(_MODELS)


def create(name: str, **options: Any) -> nn.Module:
    """Build the model registered as ``name`` (case-insensitive) with its constructor options."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(names())}")
    module, cls = _MODELS[key]
    ctor = getattr(importlib.import_module(module), cls)
    try:
        return ctor(**options)
    except TypeError as e:
        raise ValueError(f"{name}: bad option(s) {sorted(options)}: {e}") from None
