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


class ChannelCost:
    """Params and MACs of `model` as a function of how many channels each channel group loses,
    from one `count` pass: the cost model planning searches budgets with (and reports).

    `groups` maps a group id to its `Member`s (the graph's, or a `Statistics`' copy of them).
    A conv / transposed conv / linear layer's MACs are proportional to its weight's size (one
    multiply-accumulate per weight element and output position), so removing channels scales
    them exactly; biases, normalisation affines and raw parameters (`Member.param`) shrink with
    their channel axis. Channel i of a group is `block` positions of a member (a flattened
    feature map's features, a GroupNorm group, a depthwise multiplier's outputs).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, groups: dict[str, list[Any]]) -> None:
        base = count(model, example_inputs)
        self.base_params, self.base_macs = base.params, base.macs
        modules = dict(model.named_modules())
        # (module, dim) -> [(group, block)], each distinct member once
        self._members: dict[tuple[str, str], list[tuple[str, int]]] = {}
        self._params: dict[tuple[str, str], list[tuple[str, int]]] = {}  # (module, param) -> [(group, block)]
        self._axes: dict[tuple[str, str], int] = {}
        for gid, members in groups.items():
            seen = set()
            for m in members:
                key = (m.module, m.kind, m.dim, tuple(m.indices), m.block, m.param, m.axis)
                if key in seen or m.module not in modules:
                    continue
                seen.add(key)
                if m.param is not None and not isinstance(modules[m.module], _SHAPED):
                    self._params.setdefault((m.module, m.param), []).append((gid, m.block))
                    self._axes[(m.module, m.param)] = m.axis
                elif m.dim in ("in", "out"):
                    self._members.setdefault((m.module, m.dim), []).append((gid, m.block))
        # per layer, everything its cost needs that does not depend on the removal (read once)
        self._layers: dict[str, _Layer] = {}
        for name in {k[0] for k in self._members} | {k[0] for k in self._params}:
            self._layers[name] = _Layer.of(name, modules[name], base.per_layer.get(name, (0, 0))[1],
                                           self._members.get((name, "out"), []), self._members.get((name, "in"), []),
                                           self._params, self._axes)
        self._fixed = self.base_params - sum(layer.cost({})[0] for layer in self._layers.values())

    def layer(self, name: str, removed: dict[str, int]) -> tuple[int, int]:
        """(params, MACs) of module `name` when `removed[g]` channels of each group g go."""
        return self._layers[name].cost(removed) if name in self._layers else (0, 0)

    def evaluate(self, removed: dict[str, int]) -> tuple[int, int]:
        """Total (params, MACs) when `removed[g]` channels of each group g go."""
        params, macs = self._fixed, self.base_macs
        for layer in self._layers.values():
            p, m = layer.cost(removed)
            params += p
            macs += m - layer.macs
        return params, macs


_SHAPED = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class _Layer:
    """One layer of the cost model, read from its module once: base MACs, the (group, block)
    channels it loses on its output and input side, and its shape (a conv / linear layer) or
    its parameters' shapes with the (group, block) losses along each one's channel axis."""
    macs: int
    out: list[tuple[str, int]]
    inp: list[tuple[str, int]]
    shaped: tuple[int, int, int, int, bool, bool, int] | None  # cout, cin, groups, taps, transposed, bias, weight size
    params: list[tuple[list[int], int, list[tuple[str, int]]]]  # (shape, channel axis, losses) per parameter

    @classmethod
    def of(cls, name: str, mod: nn.Module, macs: int, out: list[tuple[str, int]], inp: list[tuple[str, int]],
           params: dict[tuple[str, str], list[tuple[str, int]]], axes: dict[tuple[str, str], int]) -> "_Layer":
        own = dict(mod.named_parameters(recurse=False))
        shaped, plist = None, []
        if isinstance(mod, _SHAPED):
            if isinstance(mod, nn.Linear):
                cout, cin, groups, taps = mod.out_features, mod.in_features, 1, 1
            else:
                cout, cin, groups, taps = mod.out_channels, mod.in_channels, mod.groups, _prod(mod.kernel_size)
            shaped = (cout, cin, groups, taps, isinstance(mod, nn.modules.conv._ConvTransposeNd),
                      own.get("bias") is not None, own["weight"].numel())
        else:
            plist = [(list(p.shape), axes.get((name, pname), 0), params.get((name, pname), []))
                     for pname, p in own.items()]
        return cls(macs, out, inp, shaped, plist)

    def cost(self, removed: dict[str, int]) -> tuple[int, int]:
        """(params, MACs) when `removed[g]` channels of each group g go."""
        ro = sum(removed.get(gid, 0) * block for gid, block in self.out)
        if self.shaped is not None:
            ri = sum(removed.get(gid, 0) * block for gid, block in self.inp)
            cout, cin, groups, taps, transposed, bias, size = self.shaped
            o, i = cout - ro, cin - ri
            g = i if groups > 1 and groups == cin else groups  # depthwise: a group per kept channel
            per = (i * (o // g) if transposed else o * (i // g)) if g else 0
            w2 = per * taps
            return w2 + (o if bias else 0), (self.macs // size) * w2 if size else self.macs
        total = 0
        for shape, axis, losses in self.params:
            lost = sum(removed.get(gid, 0) * block for gid, block in losses)
            if lost:
                total += _prod(shape[:axis] + [shape[axis] - lost] + shape[axis + 1:])
            elif ro and shape:  # normalisation affines: (C,) along the channel axis
                total += _prod([shape[0] - ro] + shape[1:])
            else:
                total += _prod(shape)
        return total, self.macs
