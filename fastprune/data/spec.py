"""``open_dataset(spec, **options)``: the CLI's data specs -> a torch Dataset of (image, mask)."""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from .tiles import RandomCrops, Scenes, SlidingTiles

_KINDS = ("synthetic", "inria", "airs", "camvid", "cifar10")
_TILING = ("tile", "stride", "samples", "mode", "crop_seed")


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def _options(text: str, spec: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad option {item!r} in data spec {spec!r}: expected key=value")
        options[key.strip()] = _value(val)
    return options


def _is_options(text: str) -> bool:
    items = [p.strip() for p in text.split(",")]
    return bool(text.strip()) and all("=" in p and "/" not in p.partition("=")[0] for p in items)


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"synthetic:n=64,size=128"`` -> ("synthetic", None, {"n": 64, "size": 128});
    ``"inria:/data/train"`` -> ("inria", "/data/train", {});
    ``"cifar10:/data/cifar:split=test,n=500"`` -> ("cifar10", "/data/cifar", {"split": "test", "n": 500})
    (a folder's options follow its path after a last ``:``, as ``key=value`` pairs)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string, got {spec!r}")
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in _KINDS:
        raise ValueError(f"unknown data spec {spec!r}: expected one of "
                         + ", ".join(f"{k}:..." for k in _KINDS))
    if kind == "synthetic":
        return kind, None, _options(rest, spec)
    path, colon, tail = rest.rpartition(":")
    if not (colon and path and _is_options(tail)):
        path, tail = rest, ""
    if not path:
        raise ValueError(f"data spec {spec!r} needs a path: {kind}:PATH[:key=value,...]")
    return kind, path, _options(tail, spec)


def open_source(kind: str, path: str | None, options: dict[str, Any]):
    """The scene source for a parsed spec (options not about tiling)."""
    if kind == "synthetic":
        from .sources import SyntheticSource
        classes = options.pop("classes", None)
        if classes is not None:
            if classes not in ("binary", "multiclass"):
                raise ValueError(f"synthetic: classes must be 'binary' or 'multiclass', got {classes!r}")
            options.setdefault("multiclass", classes == "multiclass")
        return _call(SyntheticSource, options, "synthetic")
    if kind in ("inria", "airs"):
        from .aerial import AerialFolder
        return _call(AerialFolder, {"layout": kind, **options}, kind, path)
    if kind == "cifar10":
        from .cifar10 import Cifar10
        return _call(Cifar10, options, kind, path)
    from .camvid import CamVidFolder
    return _call(CamVidFolder, options, kind, path)


def _call(cls, options: dict[str, Any], kind: str, *args):
    try:
        return cls(*args, **options)
    except TypeError as e:
        raise ValueError(f"{kind}: bad option(s) {sorted(options)}: {e}") from None


def open_dataset(spec: str, **options: Any) -> Dataset:
    """Open a data spec as a Dataset of (image float32 (3, H, W), mask int64 (H, W)), or for
    ``cifar10`` of (image float32 (3, 32, 32), label int64 ()) (``task = "classification"``).

    Specs: ``synthetic[:k=v,...]`` (options ``n, size, seed, classes=binary|multiclass,
    density``), ``inria:PATH``, ``airs:PATH``, ``camvid:PATH`` (PATH holds one split's image
    and label folders), ``cifar10:PATH`` (the binary version; options ``split=train|test, n,
    augment, seed``); a folder's options follow its path: ``inria:PATH:tile=256,samples=64``.
    Keyword options override the spec's. Tiling: no ``tile`` -> whole
    scenes; ``tile`` alone -> random crops (``samples`` per epoch, ``crop_seed``); ``tile`` and
    ``stride`` -> sliding windows. ``mode`` = "scenes" | "crops" | "tiles" forces one.
    The dataset has ``num_classes``, ``classes`` and ``source`` (for full-tile evaluation).
    """
    kind, path, opts = parse_spec(spec)
    opts.update(options)
    tiling = {k: opts.pop(k) for k in _TILING if k in opts}
    if kind == "cifar10":  # whole 32x32 images with a class label: a data set of its own
        if tiling:
            raise ValueError(f"cifar10: no tiling options ({', '.join(sorted(tiling))}) for 32x32 images")
        return open_source(kind, path, opts)
    source = open_source(kind, path, opts)
    tile, stride = tiling.get("tile"), tiling.get("stride")
    mode = tiling.get("mode") or ("scenes" if tile is None else "crops" if stride is None else "tiles")
    if mode == "scenes":
        return Scenes(source)
    if tile is None:
        raise ValueError(f"mode={mode!r} needs a tile size")
    if mode == "crops":
        return RandomCrops(source, int(tile), tiling.get("samples"), int(tiling.get("crop_seed", 0)))
    if mode == "tiles":
        return SlidingTiles(source, int(tile), None if stride is None else int(stride))
    raise ValueError(f"mode must be 'scenes', 'crops' or 'tiles', got {mode!r}")
