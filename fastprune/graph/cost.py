"""Parameters and multiply-accumulates (MACs) of a model on an example input.

Conventions (one forward pass, the example's batch size included):
- conv: output elements x (input channels / groups) x kernel size;
- transposed conv: input elements x (output channels / groups) x kernel size;
- linear / matmul / bmm matrix products: output elements x inner size;
- everything else (norms, activations, pooling, adds, resampling): 0 MACs, the convention of
  published figures (torchvision's 4.09 GMACs for ResNet-50). Norm layers' one multiply-add
  per element (foldable into the conv before them) is reported apart, as `norm_macs`.
Parameters count each distinct tensor once; per layer, a module's own parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .trace import ModuleStack, call_model, flat_tensors, op_name, preserved_state


@dataclass
class Count:
    """Totals and a per-layer breakdown {module name: (params, macs)}."""

    params: int
    macs: int
    per_layer: dict[str, tuple[int, int]] = field(default_factory=dict)
    norm_macs: int = 0

    def __repr__(self) -> str:
        return f"Count(params={self.params:,}, macs={self.macs:,}, layers={len(self.per_layer)})"


def _prod(xs: Any) -> int:
    return int(math.prod(int(x) for x in xs))


def op_macs(name: str, args: tuple, kwargs: dict, out: Any) -> int:
    """MACs of one torch call (0 for ops that are not counted)."""
    def a(i: int, key: str, default: Any = None) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    if name in ("conv1d", "conv2d", "conv3d"):
        w = a(1, "weight")
        return out.numel() * _prod(w.shape[1:])
    if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        x, w = a(0, "input"), a(1, "weight")
        return x.numel() * _prod(w.shape[1:])
    if name == "linear":
        w = a(1, "weight")
        return out.numel() * w.shape[1]
    if name == "bilinear":
        w = a(2, "weight")
        return out.numel() * w.shape[1] * w.shape[2]
    if name in ("matmul", "mm", "bmm", "__matmul__", "__rmatmul__", "baddbmm", "addmm", "addbmm"):
        t = [x for x in flat_tensors((args, kwargs)) if x.ndim >= 1]
        if name in ("baddbmm", "addmm", "addbmm"):
            t = t[1:]
        if name == "__rmatmul__":
            t = t[::-1]
        if len(t) >= 2 and isinstance(out, torch.Tensor):
            return out.numel() * t[0].shape[-1]
        return 0
    return 0


NORMS = ("batch_norm", "instance_norm", "group_norm", "layer_norm", "rms_norm")


class _CountMode(TorchFunctionMode):
    def __init__(self, owners: dict[int, str], stack: ModuleStack) -> None:
        super().__init__()
        self.owners = owners
        self.stack = stack
        self.macs: dict[str, int] = {}
        self.norm_macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = op_name(func)
        if name in NORMS and isinstance(out, torch.Tensor):
            self.norm_macs += out.numel()
        try:
            n = op_macs(name, args, kwargs, out)
        except Exception:  # an unusual call signature: not counted rather than failing the model
            n = 0
        if n:
            mod = None
            for t in flat_tensors((args, kwargs)):
                mod = self.owners.get(id(t))
                if mod is not None:
                    break
            if mod is None:
                mod = self.stack.top or ""
            self.macs[mod] = self.macs.get(mod, 0) + n
        return out


def count(model: nn.Module, example_inputs: Any) -> Count:
    """Parameters and MACs of `model` for one forward pass on `example_inputs`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastprune: expected an nn.Module, got {type(model).__name__}")
    owners: dict[int, str] = {}
    own_params: dict[str, int] = {}
    seen: set[int] = set()
    for name, mod in model.named_modules():
        n = 0
        for p in mod._parameters.values():
            if p is not None:
                owners.setdefault(id(p), name)
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
        if n:
            own_params[name] = n
    stack = ModuleStack(model)
    mode = _CountMode(owners, stack)
    try:
        with preserved_state(model), torch.no_grad(), mode:
            call_model(model, example_inputs)
    except Exception as exc:
        raise ValueError(f"fastprune: cannot count {type(model).__name__}: its forward failed on the example input "
                         f"({type(exc).__name__}: {exc})") from exc
    finally:
        stack.remove()
    per_layer: dict[str, tuple[int, int]] = {}
    for name in list(dict.fromkeys([*stack.order, *own_params])):
        p, m = own_params.get(name, 0), mode.macs.get(name, 0)
        if p or m:
            per_layer[name] = (p, m)
    for name, m in mode.macs.items():
        if name not in per_layer:
            per_layer[name] = (own_params.get(name, 0), m)
    return Count(params=sum(own_params.values()), macs=sum(mode.macs.values()), per_layer=per_layer,
                 norm_macs=mode.norm_macs)
