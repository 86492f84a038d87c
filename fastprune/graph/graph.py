"""Channel groups: sets of (module, channel) that must be removed together."""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .rules import dispatch
from .trace import Trace, TraceError, run_trace, spatial_window

PRODUCER_KINDS = ("conv", "conv_transpose", "linear", "depthwise", "grouped")
CONSUMER_KINDS = ("conv", "conv_transpose", "linear", "grouped")


@dataclass(frozen=True)
class Member:
    """One module's share of a group.

    Group channel i is, in this module, the channels `indices[i] ... indices[i] + block - 1` of
    dimension `dim` ('out': output channels / per-channel vectors, 'in': input channels or
    features). `block` > 1 when a feature map was flattened into a Linear (channel x spatial
    features), or when several channels go as one (a whole GroupNorm group, the outputs of a
    depthwise conv with a channel multiplier, a pixel-shuffle block). Any of those channels
    names the group channel in a removal.
    `param` names the raw parameter (kind 'param') and `axis` its sliced axis.
    """

    module: str
    kind: str
    dim: str
    indices: list[int]
    block: int = 1
    param: str | None = None
    axis: int = 0

    def positions(self, i: int) -> range:
        """Member positions of group channel i."""
        return range(self.indices[i], self.indices[i] + self.block)


@dataclass
class ChannelGroup:
    """Channels that must be removed together: group channel i is one coupled set."""

    id: int
    channels: int
    producers: list[Member]
    consumers: list[Member]
    members: list[Member]
    touches_output: bool
    blocked_by: str | None
    classes: list[int] = field(default_factory=list, repr=False)

    @property
    def prunable(self) -> bool:
        return self.blocked_by is None and self.channels > 1

    def removal(self, channels: list[int]) -> dict[str, list[int]]:
        """A removal dict ({producer: output channels}) that takes group channels `channels` away."""
        bad = [c for c in channels if not 0 <= int(c) < self.channels]
        if bad:
            raise ValueError(f"fastprune: group {self.id} has {self.channels} channels; got {bad[:5]}")
        out: dict[str, list[int]] = {}
        for m in self.producers:
            out.setdefault(m.module, []).extend(p for c in channels for p in m.positions(int(c)))
        return {k: sorted(set(v)) for k, v in out.items()}

    def structure(self) -> dict[str, Any]:
        return {
            "channels": self.channels, "touches_output": self.touches_output, "blocked": self.blocked_by is not None,
            "members": [[m.module, m.kind, m.dim, m.indices, m.block, m.param, m.axis] for m in self.members],
        }


def _role_dim(role: str) -> tuple[str, str | None, int]:
    if role.startswith("param:"):
        _, pname, axis = role.split(":")
        return "out", pname, int(axis)
    return ("in" if role == "in" else "out"), None, 0


def _members(key: tuple[str, str, str], counts: np.ndarray, positions: np.ndarray) -> list[Member] | None:
    """Members of one (module, kind, role) given its positions in each class (`positions`: the
    positions of class 0, then class 1, ..., each ascending; `counts[i]` of class i), or None if
    uneven."""
    module, kind, role = key
    dim, pname, axis = _role_dim(role)
    k = int(counts[0])
    if (counts != k).any():
        return None
    if k == 1:
        return [Member(module, kind, dim, positions.tolist(), 1, pname, axis)]
    per = positions.reshape(-1, k)
    if (per[:, 0] % k == 0).all() and (per == per[:, :1] + np.arange(k)).all():
        return [Member(module, kind, dim, per[:, 0].tolist(), k, pname, axis)]
    return [Member(module, kind, dim, per[:, j].tolist(), 1, pname, axis) for j in range(k)]


class DependencyGraph:
    """Channel groups of `model`, found by running it once on `example_inputs`.

    Works on any `nn.Module` whose forward runs on the example input (tensor, tuple of
    arguments or dict of keyword arguments; any output structure).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, trace_size: int | None = None) -> None:
        """`trace_size`: trace on the top-left trace_size x trace_size window of 4-D example
        tensors larger than that (the channel flow of a convolutional network does not depend on
        the map size, a 512x512 trace costs a whole forward pass); the whole example when the
        model's forward fails on the window. The graph's MAC counts are then those of the window."""
        self.trace: Trace = self._trace(model, example_inputs, trace_size)
        self.modules: dict[str, str] = dict(self.trace.module_types)
        called = set(self.trace.order)
        #: modules with their own parameters that the example input never ran
        self.unreached: list[str] = [n for n, m in model.named_modules()
                                     if n not in called and any(True for _ in m.parameters(recurse=False))]
        self._build()

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _trace(model: nn.Module, example_inputs: Any, trace_size: int | None) -> Trace:
        if trace_size is not None:
            window = spatial_window(example_inputs, trace_size)
            if window is not example_inputs:
                try:
                    return run_trace(model, window, dispatch)
                except TraceError:  # the model needs larger maps: trace the whole example
                    pass
        return run_trace(model, example_inputs, dispatch)

    def _build(self) -> None:
        tr = self.trace
        roots = tr.uf.roots()
        self._roots = roots
        records = tr.records
        classes_of = [roots[r.nodes] for r in records]  # each record's channel classes (roots)
        blocked: dict[int, str] = {}
        for n, why in tr.blocked.items():
            blocked.setdefault(int(roots[n]), why)
        outputs = {int(roots[n]) for n in tr.output_nodes}

        # link classes that share a producer's output: one group per coupled producer set
        parent: dict[int, int] = {}

        def gfind(a: int) -> int:
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        producing = [i for i, r in enumerate(records)
                     if r.role == "out" and r.kind in PRODUCER_KINDS and len(r.nodes)]
        touched = {i: np.unique(classes_of[i]).tolist() for i in producing}
        for i in producing:
            first = gfind(touched[i][0])
            for c in touched[i][1:]:
                a, b = gfind(first), gfind(c)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        # a component's producer records in trace order: the first one leads (orders the groups;
        # the group's channels follow its output channels, then any other classes by root)
        comps: dict[int, list[int]] = defaultdict(list)
        for i in producing:
            comps[gfind(touched[i][0])].append(i)
        staged = []
        for comp in comps.values():
            lead = comp[0]
            classes = {c for i in comp for c in touched[i]}
            uniq, first_pos = np.unique(classes_of[lead], return_index=True)
            at = dict(zip(uniq.tolist(), first_pos.tolist()))
            staged.append((lead, sorted(classes, key=lambda c, at=at: (0, at[c]) if c in at else (1, c))))
        staged.sort(key=lambda s: s[0])

        # every class's group and channel in it, then each record's share of each group it reaches
        self._group_of = np.full(len(roots), -1, dtype=np.int64)
        self._channel_of = np.full(len(roots), -1, dtype=np.int64)
        for gid, (_, classes) in enumerate(staged):
            self._group_of[classes] = gid
            self._channel_of[classes] = np.arange(len(classes))
        shares: list[list[tuple[int, int, np.ndarray, np.ndarray]]] = [[] for _ in staged]
        for i, cls in enumerate(classes_of):
            gids = self._group_of[cls]
            for gid in np.unique(gids[gids >= 0]).tolist():
                pos = np.nonzero(gids == gid)[0]
                ch = self._channel_of[cls[pos]]
                shares[gid].append((int(ch.min()), i, pos, ch))
        self.groups: list[ChannelGroup] = [
            self._make_group(gid, classes, shares[gid], blocked, outputs) for gid, (_, classes) in enumerate(staged)]
        # one record per (module, role): a producer's output nodes
        self._out_nodes: dict[str, np.ndarray] = {records[i].module: records[i].nodes for i in producing}
        self._by_producer = {}
        for g in self.groups:
            for m in g.producers:
                self._by_producer.setdefault(m.module, g)

    def _make_group(self, gid: int, classes: list[int], shares: list[tuple[int, int, np.ndarray, np.ndarray]],
                    blocked: dict[int, str], outputs: set[int]) -> ChannelGroup:
        """Group `gid` of `classes` (its channels in order) from the records' shares of it:
        (first channel reached, record index, positions in the record, their channels)."""
        reasons = []
        for c in classes:
            why = blocked.get(c)
            if why is not None and why not in reasons:
                reasons.append(why)
        members: list[Member] = []
        n = len(classes)
        for _, i, pos, ch in sorted(shares, key=lambda s: (s[0], s[1])):  # by first channel reached
            r = self.trace.records[i]
            key = (r.module, r.kind, r.role)
            order = np.argsort(ch, kind="stable")  # by channel, positions ascending within each
            counts = np.bincount(ch, minlength=n)
            ms = _members(key, counts, pos[order])
            if ms is None:
                reasons.append(f"'{key[0]}' reaches these channels an uneven number of times")
                first = np.full(n, -1, dtype=np.int64)
                reached, at = np.unique(ch[order], return_index=True)
                first[reached] = pos[order][at]  # the smallest position of each channel reached
                ms = [Member(key[0], key[1], _role_dim(key[2])[0], first.tolist())]
            members.extend(ms)
        producers = [m for m in members if m.dim == "out" and m.kind in PRODUCER_KINDS]
        consumers = [m for m in members if m.dim == "in" and m.kind in CONSUMER_KINDS]
        return ChannelGroup(
            id=gid, channels=n, producers=producers, consumers=consumers, members=members,
            touches_output=any(c in outputs for c in classes),
            blocked_by="; ".join(reasons[:3]) if reasons else None, classes=list(classes),
        )

    # -- queries ----------------------------------------------------------------------------
    def group_of(self, module_name: str) -> ChannelGroup:
        """The group whose output channels `module_name` produces."""
        g = self._by_producer.get(module_name)
        if g is None:
            if module_name not in self.modules:
                raise ValueError(f"fastprune: the model has no module named '{module_name}'")
            raise ValueError(f"fastprune: module '{module_name}' ({self.modules[module_name]}) produces no prunable "
                             "channels (it is not a conv/linear reached by the example input)")
        return g

    def producer_channels(self, module_name: str) -> int:
        """Output channels of producer `module_name`."""
        self.group_of(module_name)
        return len(self._out_nodes[module_name])

    def locate(self, module_name: str, channel: int) -> tuple[ChannelGroup, int]:
        """(group, group channel) of output channel `channel` of producer `module_name`."""
        self.group_of(module_name)  # a clear error for a module that produces no group
        n = len(self._out_nodes[module_name])
        if not (0 <= channel < n):
            raise ValueError(f"fastprune: channel index {channel} is out of range for '{module_name}' (0..{n - 1})")
        root = self._roots[self._out_nodes[module_name][channel]]
        return self.groups[int(self._group_of[root])], int(self._channel_of[root])

    def fingerprint(self) -> str:
        """Stable hash of module names, kinds, channel counts and couplings."""
        doc = {"modules": sorted(self.modules.items()), "groups": [g.structure() for g in self.groups]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        n = sum(g.prunable for g in self.groups)
        return f"DependencyGraph({len(self.groups)} groups, {n} prunable)"
