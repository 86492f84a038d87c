"""Channel groups: sets of (module, channel) that must be removed together."""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .rules import dispatch
from .trace import Record, Trace, TraceError, run_trace, spatial_window

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


def _members(key: tuple[str, str, str], per_class: list[list[int]]) -> list[Member] | None:
    """Members of one (module, kind, role) given its positions in each class, or None if uneven."""
    module, kind, role = key
    dim, pname, axis = _role_dim(role)
    counts = {len(p) for p in per_class}
    if len(counts) != 1:
        return None
    k = counts.pop()
    if k == 1:
        return [Member(module, kind, dim, [p[0] for p in per_class], 1, pname, axis)]
    blocks = []
    for p in per_class:
        if p[0] % k == 0 and p == list(range(p[0], p[0] + k)):
            blocks.append(p[0])
        else:
            blocks = None
            break
    if blocks is not None:
        return [Member(module, kind, dim, blocks, k, pname, axis)]
    return [Member(module, kind, dim, [p[j] for p in per_class], 1, pname, axis) for j in range(k)]


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
        roots = tr.uf.roots().tolist()
        self._roots = roots
        by_class: dict[int, list[Record]] = defaultdict(list)
        for r in tr.records:
            by_class[roots[r.node]].append(r)
        blocked: dict[int, str] = {}
        for n, why in tr.blocked.items():
            blocked.setdefault(roots[n], why)
        outputs = {roots[n] for n in tr.output_nodes}

        # link classes that share a producer's output: one group per coupled producer set
        parent: dict[int, int] = {}

        def gfind(a: int) -> int:
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        first: dict[tuple[str, str], int] = {}
        for root, recs in by_class.items():
            gfind(root)
            for r in recs:
                if r.role == "out" and r.kind in PRODUCER_KINDS:
                    k = (r.module, r.kind)
                    if k in first:
                        a, b = gfind(first[k]), gfind(root)
                        if a != b:
                            parent[max(a, b)] = min(a, b)
                    else:
                        first[k] = root
        comps: dict[int, list[int]] = defaultdict(list)
        for root in by_class:
            comps[gfind(root)].append(root)

        # order: groups by first producer record, channels by that producer's index
        rec_order = {}
        for i, r in enumerate(tr.records):
            if r.role == "out" and r.kind in PRODUCER_KINDS:
                rec_order.setdefault((r.module, r.kind), i)
        self.groups: list[ChannelGroup] = []
        self._class_group: dict[int, tuple[int, int]] = {}
        self._out_node: dict[tuple[str, int], int] = {}
        self._out_count: dict[str, int] = {}
        staged = []
        for comp in comps.values():
            prod_keys = {(r.module, r.kind) for c in comp for r in by_class[c] if r.role == "out" and r.kind in PRODUCER_KINDS}
            if not prod_keys:
                continue
            lead = min(prod_keys, key=lambda k: rec_order[k])

            def sort_key(c: int, lead=lead) -> tuple[int, int]:
                ps = [r.pos for r in by_class[c] if (r.module, r.kind) == lead and r.role == "out"]
                return (0, min(ps)) if ps else (1, c)

            staged.append((rec_order[lead], sorted(comp, key=sort_key)))
        staged.sort(key=lambda s: s[0])
        for gid, (_, classes) in enumerate(staged):
            self.groups.append(self._make_group(gid, classes, by_class, blocked, outputs))
        for r in tr.records:
            if r.role == "out" and r.kind in PRODUCER_KINDS:
                self._out_node.setdefault((r.module, r.pos), r.node)
                self._out_count[r.module] = max(self._out_count.get(r.module, 0), r.pos + 1)
        self._by_producer = {}
        for g in self.groups:
            for m in g.producers:
                self._by_producer.setdefault(m.module, g)

    def _make_group(self, gid: int, classes: list[int], by_class: dict[int, list[Record]],
                    blocked: dict[int, str], outputs: set[int]) -> ChannelGroup:
        keys: dict[tuple[str, str, str], list[list[int]]] = {}
        for i, c in enumerate(classes):
            self._class_group[c] = (gid, i)
            for r in by_class[c]:
                k = (r.module, r.kind, r.role)
                per = keys.get(k)
                if per is None:
                    per = keys[k] = [[] for _ in classes]
                per[i].append(r.pos)
        reasons = []
        for c in classes:
            why = blocked.get(c)
            if why is not None and why not in reasons:
                reasons.append(why)
        members: list[Member] = []
        for key, per in keys.items():
            per = [p if len(p) == 1 else sorted(set(p)) for p in per]
            ms = _members(key, per)
            if ms is None:
                reasons.append(f"'{key[0]}' reaches these channels an uneven number of times")
                ms = [Member(key[0], key[1], _role_dim(key[2])[0], [p[0] if p else -1 for p in per])]
            members.extend(ms)
        producers = [m for m in members if m.dim == "out" and m.kind in PRODUCER_KINDS]
        consumers = [m for m in members if m.dim == "in" and m.kind in CONSUMER_KINDS]
        return ChannelGroup(
            id=gid, channels=len(classes), producers=producers, consumers=consumers, members=members,
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
        return self._out_count[module_name]

    def locate(self, module_name: str, channel: int) -> tuple[ChannelGroup, int]:
        """(group, group channel) of output channel `channel` of producer `module_name`."""
        g = self.group_of(module_name)
        n = self._out_count[module_name]
        if not (0 <= channel < n):
            raise ValueError(f"fastprune: channel index {channel} is out of range for '{module_name}' (0..{n - 1})")
        root = self._roots[self._out_node[(module_name, channel)]]
        gid, i = self._class_group[root]
        return self.groups[gid], i

    def fingerprint(self) -> str:
        """Stable hash of module names, kinds, channel counts and couplings."""
        doc = {"modules": sorted(self.modules.items()), "groups": [g.structure() for g in self.groups]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        n = sum(g.prunable for g in self.groups)
        return f"DependencyGraph({len(self.groups)} groups, {n} prunable)"
