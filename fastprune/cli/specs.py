"""Model and data SPECs, checkpoints and example inputs: what the commands share.

Model SPEC:
  - a built-in name with options: ``unet``, ``unet:base_width=16,depth=3`` (fastprune.models.create);
  - ``package.module:factory[:key=value,...]``: the user's own factory, called with the options;
  - a folder written by ``fastprune prune``/``finetune`` (a pruned model and the plan that made it).
Checkpoints: ``.safetensors``, or a torch file read with ``weights_only=True`` (never pickle).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import UsageError

BUILTIN_MODELS = ("unet", "segnet", "deeplabv3plus", "ternausnet", "vgg16")
MODEL_MARKER = "fastprune-model.json"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, '1x2' -> '1x2'."""
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_options(text: str) -> dict[str, Any]:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'}."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _IDENT.match(key):
            raise UsageError(f"bad option {item!r} in SPEC: options are key=value separated by commas")
        out[key] = parse_value(value.strip())
    return out


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model SPEC: a built-in name or a user factory, with keyword options."""

    text: str
    name: str  # built-in name, or 'package.module:factory'
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_MODELS


def parse_model_spec(text: str, source: str | Path | None = None, trust_code: bool = False) -> ModelSpec:
    """A model SPEC typed by the user, or (`source`: the file it was read from) recorded in a file.

    Trust model: a file never names code to import. A SPEC read from a file may name a built-in
    model only; a user factory it names is refused unless the user confirms it on the command
    line (`trust_code`: --trust-code, or the same --model pkg.mod:factory given explicitly).
    """
    if not isinstance(text, str) or not text.strip():
        where = f" recorded in {source}" if source is not None else ""
        raise UsageError(f"model SPEC{where} is {text!r}: expected a built-in name, package.module:factory "
                         "or a model folder")
    text = text.strip()
    head, _, rest = text.partition(":")
    if head.lower() in BUILTIN_MODELS:
        return ModelSpec(text, head.lower(), parse_options(rest))
    if _MODULE.match(head) and rest:
        factory, _, opts = rest.partition(":")
        if _IDENT.match(factory):
            if source is not None and not trust_code:
                raise UsageError(
                    f"{source} names the Python factory {head}:{factory}; fastprune never imports code a file "
                    "names: check that file and that code, then confirm with --trust-code (or pass "
                    f"--model {head}:{factory} yourself)")
            return ModelSpec(text, f"{head}:{factory}", parse_options(opts))
    if source is not None:
        raise UsageError(f"{source} records the model SPEC {text[:80]!r}, which is neither a built-in model nor "
                         "package.module:factory")
    raise UsageError(
        f"unknown model SPEC {text!r}: use a built-in name ({', '.join(BUILTIN_MODELS)}) with options "
        "like unet:base_width=16, package.module:factory, or a folder written by `fastprune prune`")


def factory_for(spec: ModelSpec) -> Callable[[], nn.Module]:
    """A zero-argument function that builds the (unpruned) model of `spec`."""
    if spec.builtin:
        try:
            from ..models import create
        except ImportError as exc:
            raise NotImplementedError(f"the built-in models (fastprune.models) are not available: {exc}") from None
        return lambda: create(spec.name, **spec.options)
    module_name, fn_name = spec.name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} for model SPEC {spec.text!r}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{module_name!r} has no callable {fn_name!r} (model SPEC {spec.text!r})")
    return lambda: fn(**spec.options)


def build(spec: ModelSpec) -> nn.Module:
    try:
        model = factory_for(spec)()
    except TypeError as exc:
        raise UsageError(f"model SPEC {spec.text!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model SPEC {spec.text!r} built a {type(model).__name__}, not a torch nn.Module")
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: .safetensors, or torch.load(weights_only=True) of a state dict
    (or of a dict holding one under 'state_dict' or 'model')."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise UsageError(f"{path} is not a checkpoint torch can read with weights_only=True "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path} does not hold a state dict (name -> tensor)")
    return obj


def load_weights(model: nn.Module, path: str | Path, what: str = "the model") -> None:
    load_state(model, read_state_dict(path), path, what)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str = "the model") -> None:
    """`model.load_state_dict(state, strict=True)`; a misfit is the user's error naming `path`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split("\n\t")[1:2]) or str(exc).splitlines()[0]
        raise UsageError(f"the weights in {path} do not fit {what}: {first.strip()}") from None


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """A plain state dict as safetensors (no pickle), written atomically."""
    from safetensors.torch import save

    from .._files import atomic_write

    return atomic_write(path, save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}))


def is_model_dir(text: str | Path) -> bool:
    return bool(str(text)) and (Path(text) / MODEL_MARKER).is_file()


def first_conv_in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise UsageError("the model has no Conv2d layer: fastprune prunes convolutional networks")


def example_input(model: nn.Module, size: int | tuple[int, int] = 64) -> torch.Tensor:
    """A (1, C, H, W) zero tensor for tracing, C from the model's first convolution."""
    h, w = (size, size) if isinstance(size, int) else size
    return torch.zeros(1, first_conv_in_channels(model), h, w)


def parse_size(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '64x96' -> (64, 96)."""
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"bad size {text!r}: use N or HxW") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise UsageError(f"bad size {text!r}: use N or HxW with positive numbers")
    return vals[0], vals[1]


def open_data(spec: str, batch_size: int | None = None, **options: Any):
    """fastprune.data.open_dataset(spec); a missing path or bad SPEC is the user's error, and so
    are items of several sizes to be stacked in batches of `batch_size`."""
    try:
        from ..data import open_dataset
        from ..data.tiles import check_batchable
    except ImportError as exc:
        raise NotImplementedError(f"the data sets (fastprune.data) are not available: {exc}") from None
    data = open_dataset(spec, **options)
    if batch_size is not None:
        try:
            check_batchable(data, batch_size)
        except ValueError as exc:
            raise UsageError(f"data SPEC {spec!r}: {exc}") from None
    return data
