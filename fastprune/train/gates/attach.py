"""Trainable importance weights attached to any model by forward hooks (no edit of its code).

Each prunable channel group gets one weight per group channel, shared by all the group's
coupled producers. The weight multiplies the group's feature map where it is produced:
at the output of every normalisation member of the group (a norm re-normalises, so a
scale put before it would be undone) and at the output of every producer that is not fed
straight into a norm. Masking a channel sets its weight to 0 at all those sites, and
`fold()` multiplies the norm's (or, with no norm, the producer's) weight and bias by the
gate, which reproduces the gated model exactly with no extra op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .init import init_gates

NORM_KINDS = frozenset({"batchnorm", "groupnorm", "instancenorm", "layernorm"})
# axis of the output channels in the weight of a producer we may fold a gate into
_WEIGHT_OUT_AXIS = {"conv": 0, "depthwise": 0, "grouped": 0, "linear": 0, "conv_transpose": 1}


def group_size(group: Any) -> int:
    """Number of group channels (`channels` is a count, or a list of channel ids)."""
    ch = group.channels
    return int(ch) if isinstance(ch, int) else len(ch)


def gateable(group: Any) -> bool:
    """A group gets gates when it may be pruned without touching the model's output."""
    return bool(getattr(group, "prunable", True)) and not getattr(group, "touches_output", False)



@dataclass
class _Site:
    """One hooked module and which gate entries scale which of its output channels."""

    name: str
    kind: str
    # (group slot, member channel positions, group channel of each position)
    parts: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def _positions(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Member channel positions of a member and the group channel each belongs to.

    Uses the member's own `positions(i)` (a group channel may cover a block of member
    channels: a GroupNorm group, a depthwise multiplier's outputs); a member without that
    method maps group channel i to member channel indices[i] + 0 .. block - 1.
    """
    block = int(getattr(m, "block", 1))
    spans = [list(m.positions(i)) if hasattr(m, "positions") else list(range(m.indices[i], m.indices[i] + block))
             for i in range(len(m.indices))]
    pos = torch.as_tensor([p for span in spans for p in span], dtype=torch.long)
    src = torch.as_tensor([i for i, span in enumerate(spans) for _ in span], dtype=torch.long)
    return pos, src


def _as_tuple(example_inputs: Any) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _norm_fed_producers(model: nn.Module, producers: set[str], norms: set[str], example_inputs: Any) -> set[str]:
    """Producers whose output tensor is the very input of a norm (traced on one forward pass).

    The traced outputs are held alive until the pass ends, so no later tensor can reuse
    their memory and be mistaken for them.
    """
    mods = dict(model.named_modules())
    outs: dict[str, list[torch.Tensor]] = {p: [] for p in producers}
    ins: list[torch.Tensor] = []
    handles = []
    for p in producers:
        handles.append(mods[p].register_forward_hook(
            lambda m, i, o, p=p: outs[p].append(o) if torch.is_tensor(o) else None))
    for n in norms:
        handles.append(mods[n].register_forward_hook(
            lambda m, i, o: ins.append(i[0]) if i and torch.is_tensor(i[0]) else None))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*_as_tuple(example_inputs))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    fed = {(t.data_ptr(), tuple(t.shape)) for t in ins}
    return {p for p, seen in outs.items() if any((t.data_ptr(), tuple(t.shape)) in fed for t in seen)}


def _norm_width(norm: nn.Module) -> int | None:
    """Channel count of a non-affine norm we could give an affine, else None."""
    n = getattr(norm, "num_features", None) or getattr(norm, "num_channels", None)
    return None if n is None or getattr(norm, "bias", None) is not None else int(n)


def _make_affine(norm: nn.Module, n: int) -> torch.Tensor:
    """Give a non-affine norm an identity affine (weight 1, bias 0) so gates can be folded into it."""
    like = next(iter(norm.buffers()), torch.empty(0))
    norm.weight = nn.Parameter(torch.ones(n, device=like.device))
    norm.bias = nn.Parameter(torch.zeros(n, device=like.device))
    norm.affine = True
    return norm.weight


class Gates(nn.Module):
    """Importance weights of a model's prunable channel groups, live while attached.

    `groups` are `fastprune.graph.ChannelGroup`s (or objects with the same fields);
    groups that are not `.prunable` or that touch the model's output get no gates. `alive` masks (one per group) zero
    gates without losing their trained values.
    """

    def __init__(self, model: nn.Module, groups: Iterable[Any], example_inputs: Any, init: str = "ones",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        prunable = [g for g in groups if gateable(g)]
        if not prunable:
            raise ValueError("fastprune: the model has no prunable channel group, so there is nothing to gate or prune")
        mods = dict(model.named_modules())
        self.groups = prunable
        self.weights = nn.ParameterList(
            [nn.Parameter(init_gates(group_size(g), init, generator)) for g in prunable])
        # each group's initial gate magnitude (RMS): He/LeCun/Xavier scale with 1/sqrt(group size)
        self.init_scale = [float(w.detach().pow(2).mean().sqrt()) or 1.0 for w in self.weights]
        for i, g in enumerate(prunable):
            self.register_buffer(f"alive{i}", torch.ones(group_size(g)))
        producers = {m.module for g in prunable for m in g.producers}
        norms = {m.module for g in prunable for m in g.members if m.kind in NORM_KINDS}
        for name in producers | norms:
            if name not in mods:
                raise ValueError(f"fastprune: channel group names module '{name}', which the model does not have")
        fed = _norm_fed_producers(model, producers, norms, example_inputs)
        sites: dict[str, _Site] = {}
        for slot, g in enumerate(prunable):
            seen: set[str] = set()
            for m in list(g.members) + list(g.producers):
                is_norm = m.kind in NORM_KINDS
                is_site = is_norm or (m in g.producers and m.module not in fed)
                if not is_site or m.module in seen:
                    continue
                if not is_norm and m.kind not in _WEIGHT_OUT_AXIS:
                    raise NotImplementedError(f"fastprune: cannot gate producer '{m.module}' of kind '{m.kind}'")
                seen.add(m.module)
                site = sites.setdefault(m.module, _Site(m.module, m.kind))
                site.parts.append((slot, *_positions(m)))
        self.sites = list(sites.values())
        self._model = [model]  # not a submodule: the gates are not part of the model's state
        self._handles: list[Any] = []
        self.attach()

    # --- live gating -------------------------------------------------------------------------
    def effective(self, slot: int) -> torch.Tensor:
        """Gate values of group `slot` with masked channels set to 0."""
        return self.weights[slot] * getattr(self, f"alive{slot}")

    def _multiplier(self, site: _Site, channels: int, like: torch.Tensor) -> torch.Tensor:
        mult = torch.ones(channels, dtype=like.dtype, device=like.device)
        for slot, pos, src in site.parts:
            gate = self.effective(slot).to(like.dtype)[src.to(like.device)]
            mult = mult.index_put((pos.to(like.device),), gate)
        return mult

    def _hook(self, site: _Site):
        last = site.kind in ("linear", "layernorm")  # channels-last outputs

        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            dim = out.dim() - 1 if last else 1
            mult = self._multiplier(site, out.shape[dim], out)
            shape = [1] * out.dim()
            shape[dim] = -1
            return out * mult.view(shape)

        return hook

    def attach(self) -> None:
        if self._handles:
            return
        mods = dict(self._model[0].named_modules())
        self._handles = [mods[s.name].register_forward_hook(self._hook(s)) for s in self.sites]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # --- masking -----------------------------------------------------------------------------
    def set_removed(self, removed: dict[int, Sequence[int]]) -> None:
        """Mask exactly these group channels ({group slot: group channel indices}); unmask the rest."""
        for slot in range(len(self.groups)):
            alive = torch.ones_like(getattr(self, f"alive{slot}"))
            idx = list(removed.get(slot, ()))
            if idx:
                alive[torch.as_tensor(idx, dtype=torch.long)] = 0
            getattr(self, f"alive{slot}").copy_(alive)

    def removed(self) -> dict[int, list[int]]:
        """Masked group channels per group slot (only groups that lose some)."""
        out = {}
        for slot in range(len(self.groups)):
            idx = (getattr(self, f"alive{slot}") == 0).nonzero().flatten().tolist()
            if idx:
                out[slot] = idx
        return out

    def removal(self) -> dict[str, list[int]]:
        """Output channels to remove per producer (every coupled producer of a group is listed)."""
        out: dict[str, set[int]] = {}
        for slot, idx in self.removed().items():
            for p in self.groups[slot].producers:
                out.setdefault(p.module, set()).update(int(p.indices[i]) for i in idx)
        return {k: sorted(v) for k, v in out.items()}

    def scores(self, per_layer: bool = False) -> list[torch.Tensor]:
        """|gate| per group (detached copies), the importance the pruning loop sorts by; with
        `per_layer`, divided by the group's initial gate RMS (`init_scale`), so one threshold
        means the same relative drop in every layer whatever the fan-scaled initialisation."""
        return [w.detach().abs() / (s if per_layer else 1.0) for w, s in zip(self.weights, self.init_scale)]

    # --- folding -----------------------------------------------------------------------------
    @torch.no_grad()
    def fold(self) -> None:
        """Multiply each site's weight and bias by its (masked) gates and remove the hooks.

        Exact: a norm's output w*x̂+b times g is (g w) x̂ + g b; a producer's W x + b times g is
        (g W) x + g b along its output-channel axis.
        """
        mods = dict(self._model[0].named_modules())
        checks = []
        for s in self.sites:
            mod = mods[s.name]
            w = getattr(mod, "weight", None)
            if s.kind in NORM_KINDS:
                if w is None:
                    channels = _norm_width(mod)
                    if channels is None:
                        raise NotImplementedError(f"fastprune: cannot fold gates into norm '{s.name}' without an affine weight")
                elif w.dim() != 1:
                    raise NotImplementedError(f"fastprune: cannot fold gates into norm '{s.name}' with weight shape {tuple(w.shape)}")
                else:
                    channels = w.shape[0]
                axis = 0
            else:
                if w is None:
                    raise NotImplementedError(f"fastprune: producer '{s.name}' has no weight to fold a gate into")
                transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd) or s.kind == "conv_transpose"
                if transposed and getattr(mod, "groups", 1) != 1:
                    raise NotImplementedError(f"fastprune: folding into grouped transposed conv '{s.name}' is not supported")
                axis = 1 if transposed else _WEIGHT_OUT_AXIS[s.kind]
                channels = w.shape[axis]
            checks.append((mod, w, axis, channels, s))
        for mod, w, axis, channels, s in checks:
            if w is None:  # a non-affine norm: exact with an identity affine first
                w = _make_affine(mod, channels)
            mult = self._multiplier(s, channels, w)
            shape = [1] * w.dim()
            shape[axis] = -1
            w.mul_(mult.view(shape))
            b = getattr(mod, "bias", None)
            if b is not None:
                b.mul_(mult)
        self.detach()
