"""``create(name, **options)``: the CLI's model names -> a model."""
from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

MAX_PARAMETERS = 2_000_000_000  # 8 GiB of float32 weights: larger is a mistyped option

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
        try:
            with torch.device("meta"):  # shapes only, no memory: refuse a model too large to build
                params = sum(p.numel() for p in ctor(**options).parameters())
        except (RuntimeError, OverflowError, MemoryError):  # a tensor size beyond int64
            params = float("inf")
        if params > MAX_PARAMETERS:
            size = "layers beyond any tensor size" if params == float("inf") else \
                f"{params:.3g} parameters ({4 * params / 2**30:.3g} GiB in float32)"
            raise ValueError(f"{name} with {options} would have {size}, more than {MAX_PARAMETERS:.0e} parameters: "
                             "choose a smaller width or depth")
        return ctor(**options)
    except TypeError as e:
        raise ValueError(f"{name}: bad option(s) {sorted(options)}: {e}") from None
