"""Analytic parameter and MAC model of a model under channel removal, for planning.

One forward pass on the example input records each layer's output size; after that the
params and MACs (multiply-accumulates) of any candidate keep-count per group are a cheap sum,
so global targets can be searched without touching the model. Convolutions, transposed
convolutions, linear layers and affine normalisation layers shrink with their channels;
every other parameter counts as fixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class _Layer:
    name: str
    kind: str            # conv | convT | linear | norm
    cin: int
    cout: int
    groups: int
    taps: int            # kernel elements
    positions: int       # output positions (conv, linear) / input positions (convT) per sample
    bias: bool


class CostModel:
    """params/MACs as a function of the removed channels per group."""

    def __init__(self, model: nn.Module, example_inputs: Any, stats: Any) -> None:
        self.layers: dict[str, _Layer] = {}
        sizes: dict[str, tuple[int, int]] = {}
        hooks = []
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                nn.ConvTranspose3d, nn.Linear)):
                def hook(m, args, out, name=name):
                    x = args[0]
                    per_in = x[0].numel() // x.shape[1] if x.dim() > 2 else 1
                    per_out = out[0].numel() // out.shape[1] if out.dim() > 2 else 1
                    if isinstance(m, nn.Linear):
                        per_in = x.numel() // x.shape[0] // x.shape[-1] if x.dim() > 2 else 1
                        per_out = per_in
                    sizes[name] = (per_in, per_out)
                hooks.append(mod.register_forward_hook(hook))
        was = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.no_grad():
                if isinstance(example_inputs, (tuple, list)):
                    model(*example_inputs)
                else:
                    model(example_inputs)
        finally:
            for h in hooks:
                h.remove()
            for m, t in was.items():
                m.training = t
        self.total_params = sum(p.numel() for p in model.parameters())
        variable = 0
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and name in sizes:
                self.layers[name] = _Layer(name, "linear", mod.in_features, mod.out_features, 1, 1,
                                           sizes[name][1], mod.bias is not None)
            elif isinstance(mod, nn.modules.conv._ConvTransposeNd) and name in sizes:
                taps = int(torch.tensor(mod.kernel_size).prod())
                self.layers[name] = _Layer(name, "convT", mod.in_channels, mod.out_channels, mod.groups, taps,
                                           sizes[name][0], mod.bias is not None)
            elif isinstance(mod, nn.modules.conv._ConvNd) and name in sizes:
                taps = int(torch.tensor(mod.kernel_size).prod())
                self.layers[name] = _Layer(name, "conv", mod.in_channels, mod.out_channels, mod.groups, taps,
                                           sizes[name][1], mod.bias is not None)
            elif isinstance(mod, _NORMS) and getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
                c = mod.weight.shape[0]
                self.layers[name] = _Layer(name, "norm", c, c, 1, 0, 0, getattr(mod, "bias", None) is not None)
            else:
                continue
            variable += sum(p.numel() for p in mod.parameters(recurse=False))
        self.fixed_params = self.total_params - variable
        # (module, dim) -> [(gid, member indices)]
        self.members: dict[tuple[str, str], list[tuple[str, list[int]]]] = {}
        for gid, g in stats.groups.items():
            seen = set()
            for m in list(g.members) + list(g.producers) + list(g.consumers):
                key = (m["module"], m["dim"])
                if key in seen or m["module"] not in self.layers:
                    continue
                seen.add(key)
                self.members.setdefault(key, []).append((gid, list(m["indices"])))
        self.base_params, self.base_macs = self.evaluate({})

    def _removed(self, name: str, dim: str, removed: dict[str, set[int]]) -> int:
        n = 0
        for gid, idx in self.members.get((name, dim), []):
            gone = removed.get(gid)
            if gone:
                n += len({idx[i] for i in gone})
        return n

    def layer_cost(self, name: str, removed: dict[str, set[int]]) -> tuple[int, int]:
        """(params, MACs) of one layer when the channels `removed` (group -> group indices) go."""
        L = self.layers[name]
        cout = L.cout - self._removed(name, "out", removed)
        cin = L.cin - self._removed(name, "in", removed)
        if L.kind == "norm":
            c = min(cin, cout)
            return c * (2 if L.bias else 1), 0
        if L.groups > 1 and L.groups == L.cin:  # depthwise: channels in and out go together
            g = min(cin, cout * L.cin // max(L.cout, 1))
            per = L.cout // L.cin
            w = g * per * L.taps
            return w + (g * per if L.bias else 0), w * L.positions
        g = L.groups
        if L.kind == "convT":
            w = cin * (cout // g) * L.taps
            return w + (cout if L.bias else 0), w * L.positions
        w = cout * (cin // g) * L.taps
        return w + (cout if L.bias else 0), w * L.positions

    def evaluate(self, removed: dict[str, set[int]]) -> tuple[int, int]:
        """Total (params, MACs) of the model with `removed` channels gone."""
        params, macs = self.fixed_params, 0
        for name in self.layers:
            p, m = self.layer_cost(name, removed)
            params += p
            macs += m
        return params, macs
