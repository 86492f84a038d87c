"""Run a model once and record how channel dimensions flow between modules.

Every tensor that carries prunable channels gets a `Tag`: which of its dimensions is the
channel dimension and, per channel, a node id. Nodes are merged (union-find) when an op
forces channels to go together (residual add, SE gating, depthwise conv, group norm ...).
Modules attach `Record`s to nodes (this conv's output channel 7 is node 123). An op the
rules do not understand blocks the nodes that pass through it, with a reason naming it.

Tracing uses a `TorchFunctionMode`, so any module whose forward runs on the example input
works (no fx restriction); forward hooks keep a stack of qualified module names.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten


@dataclass
class Tag:
    """Channel dimension `dim` of a tensor and one node id per channel."""

    dim: int
    ids: np.ndarray


class Record(NamedTuple):
    """Module `module` touches channels 0 .. len(nodes) - 1 of its `role` ('out', 'in', 'norm' or
    'param:<name>:<axis>'); channel j is node nodes[j]. One record per (module, role), not one per
    channel: the graph is built from these arrays at once."""

    nodes: np.ndarray
    module: str
    kind: str
    role: str


class UnionFind:
    """Disjoint sets over consecutive integer ids."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self) -> np.ndarray:
        """Root of every id at once (pointer jumping; roots are the smallest id of each set)."""
        p = np.asarray(self.parent, dtype=np.int64)
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            if x != y:
                self.union(x, y)


@dataclass
class ModuleCall:
    """What one conv/linear-like module did: op family, groups, channel counts, where called."""

    op: str
    groups: int
    in_channels: int
    out_channels: int
    own_call: bool


@dataclass
class Trace:
    """Everything the graph builder needs from one forward pass."""

    uf: UnionFind = field(default_factory=UnionFind)
    records: list[Record] = field(default_factory=list)
    blocked: dict[int, str] = field(default_factory=dict)
    output_nodes: set[int] = field(default_factory=set)
    calls: dict[str, ModuleCall] = field(default_factory=dict)
    module_types: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)


class TraceError(ValueError):
    """The model could not be traced on the example input."""


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """Call `model` the way `example_inputs` says: tensor -> m(x), tuple/list -> m(*x), dict -> m(**x)."""
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


class preserved_state:
    """Context manager: buffers (running stats) come back unchanged after a forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> "preserved_state":
        self.saved = [(b, b.detach().clone()) for b in self.model.buffers()]
        return self

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for b, v in self.saved:
                if b.shape == v.shape:
                    b.copy_(v)


class ModuleStack:
    """Forward hooks that keep the stack of qualified names of the modules now running."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[str] = []
        self.order: list[str] = []
        self._seen: set[str] = set()
        self.handles = []
        for name, mod in model.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._push(name)))
            self.handles.append(mod.register_forward_hook(self._pop(name), always_call=True))

    def _push(self, name: str) -> Callable:
        def hook(mod: nn.Module, args: Any) -> None:
            self.stack.append(name)
            if name not in self._seen:
                self._seen.add(name)
                self.order.append(name)
        return hook

    def _pop(self, name: str) -> Callable:
        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
        return hook

    @property
    def top(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def op_name(func: Callable) -> str:
    """A normalised name for a torch function, method, dunder or property getter."""
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", name)
    return name


class Tracer:
    """Holds tags of live tensors and the trace being built; rules call its helpers."""

    def __init__(self, model: nn.Module) -> None:
        self.trace = Trace()
        self.uf = self.trace.uf
        self._tags: dict[int, tuple[weakref.ref, Tag]] = {}
        self._recorded: dict[tuple[str, str], np.ndarray] = {}
        self._derived: dict[int, tuple[weakref.ref, list[tuple[str, str]]]] = {}
        self._uniform: dict[int, weakref.ref] = {}
        self.params: dict[int, tuple[str, str, torch.Tensor]] = {}
        for mname, mod in model.named_modules():
            self.trace.module_types[mname] = type(mod).__name__
            for pname, p in list(mod._parameters.items()) + list(mod._buffers.items()):
                if p is not None and id(p) not in self.params:
                    self.params[id(p)] = (mname, pname, p)
        self.stack: ModuleStack | None = None

    # -- tags -----------------------------------------------------------------
    def tag(self, t: Any) -> Tag | None:
        if not isinstance(t, torch.Tensor):
            return None
        e = self._tags.get(id(t))
        if e is not None and e[0]() is t:
            return e[1]
        return None

    def set_tag(self, t: torch.Tensor, tag: Tag | None) -> None:
        if tag is None:
            self._tags.pop(id(t), None)
            return
        try:
            self._tags[id(t)] = (weakref.ref(t), tag)
        except TypeError:
            pass

    # -- nodes ----------------------------------------------------------------
    def fresh(self, n: int, blocked: str | None = None) -> np.ndarray:
        ids = self.uf.make(n)
        if blocked is not None:
            for i in ids.tolist():
                self.trace.blocked.setdefault(i, blocked)
        return ids

    def block(self, ids: np.ndarray | None, reason: str) -> None:
        if ids is None:
            return
        where = self.where()
        msg = f"{reason}{where}"
        for i in np.unique(ids).tolist():
            self.trace.blocked.setdefault(int(i), msg)

    def block_tensors(self, tensors: list[torch.Tensor], reason: str) -> None:
        for t in tensors:
            tg = self.tag(t)
            if tg is not None:
                self.block(tg.ids, reason)

    def record(self, ids: np.ndarray, module: str, kind: str, role: str) -> None:
        """Module `module` touches channel j (node ids[j]) of `role`."""
        prev = self._recorded.get((module, role))
        if prev is None:
            self._recorded[(module, role)] = ids
            self.trace.records.append(Record(np.array(ids, dtype=np.int64), module, kind, role))
            return
        if len(prev) != len(ids):
            self.block(np.concatenate([prev, ids]), f"module '{module}' is called on different channel counts")
            return
        self.uf.union_arrays(prev, ids)  # the same weights used again: same channels

    def where(self) -> str:
        top = self.stack.top if self.stack is not None else None
        return f" (in module '{top}')" if top else ""

    def owner(self, t: Any) -> tuple[str, str] | None:
        """(module, parameter name) when `t` is a parameter or buffer of the model."""
        if not isinstance(t, torch.Tensor):
            return None
        e = self.params.get(id(t))
        if e is not None and e[2] is t:
            return e[0], e[1]
        return None

    def param_axis(self, t: torch.Tensor, k: int, C: int) -> tuple[str, str, int] | None:
        """(module, name, axis) when dim `k` of `t` (size C) is an axis of a parameter/buffer or of a view of one."""
        own = self.owner(t)
        if own is not None:
            return (own[0], own[1], k) if t.shape[k] == C else None
        base = getattr(t, "_base", None)
        own = self.owner(base)
        if own is None or t.shape[k] != C:
            return None
        big = [d for d in range(base.ndim) if base.shape[d] != 1]
        if len(big) == 1 and base.shape[big[0]] == C:
            return own[0], own[1], big[0]
        return None

    def owner_of_view(self, t: torch.Tensor) -> tuple[str, str, torch.Tensor] | None:
        """(module, name, param) when `t` is a parameter or a same-size view of a 1-D one."""
        own = self.owner(t)
        if own is not None:
            return own[0], own[1], t
        base = getattr(t, "_base", None)
        if base is not None:
            own = self.owner(base)
            if own is not None and base.ndim == 1 and base.numel() == t.numel():
                return own[0], own[1], base
        return None


    # -- per-channel constants computed from parameters (FrozenBatchNorm-style scale and shift) ------------
    def param_sources(self, t: Any) -> list[tuple[str, str]] | None:
        """1-D parameters/buffers `t` is computed from elementwise (same length), or None."""
        if not isinstance(t, torch.Tensor):
            return None
        own = self.owner_of_view(t)
        if own is not None and own[2].ndim == 1:
            return [(own[0], own[1])]
        e = self._derived.get(id(t))
        if e is not None and e[0]() is t:
            return e[1]
        return None

    def is_uniform(self, t: Any) -> bool:
        """`t` was made in forward with the same law in every channel (zeros, ones, full, random fills)."""
        e = self._uniform.get(id(t)) if isinstance(t, torch.Tensor) else None
        return e is not None and e() is t

    def set_uniform(self, t: torch.Tensor) -> None:
        try:
            self._uniform[id(t)] = weakref.ref(t)
        except TypeError:
            pass

    def clear_uniform(self, t: Any) -> None:
        if isinstance(t, torch.Tensor):
            self._uniform.pop(id(t), None)

    def set_derived(self, t: torch.Tensor, sources: list[tuple[str, str]]) -> None:
        try:
            self._derived[id(t)] = (weakref.ref(t), sources)
        except TypeError:
            pass


def flat_tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: Tracer, dispatch: Callable) -> None:
        super().__init__()
        self.tracer = tracer
        self.dispatch = dispatch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self.dispatch(self.tracer, func, args, kwargs, out)
        except Exception as exc:  # a rule that cannot handle this call blocks, never breaks the trace
            name = op_name(func)
            for t in flat_tensors((args, kwargs, out)):
                tg = self.tracer.tag(t)
                if tg is not None:
                    self.tracer.block(tg.ids, f"op '{name}' could not be analysed ({type(exc).__name__}: {exc})")
            for t in flat_tensors(out):
                self.tracer.set_tag(t, None)
        return out


def spatial_window(x: Any, size: int) -> Any:
    """The top-left size x size window of every 4-D tensor in `x` (tensor, tuple, list or dict)
    whose last two dimensions exceed it; `x` itself when nothing is cut."""
    if isinstance(x, torch.Tensor):
        return x[..., :size, :size] if x.dim() == 4 and max(x.shape[-2:]) > size else x
    if isinstance(x, (tuple, list)):
        cut = [spatial_window(v, size) for v in x]
        return type(x)(cut) if any(a is not b for a, b in zip(cut, x)) else x
    if isinstance(x, dict):
        cut = {k: spatial_window(v, size) for k, v in x.items()}
        return cut if any(cut[k] is not x[k] for k in x) else x
    return x


def run_trace(model: nn.Module, example_inputs: Any, dispatch: Callable) -> Trace:
    """Run `model` once on `example_inputs`, feeding every torch call to `dispatch`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastprune: expected an nn.Module, got {type(model).__name__}")
    tracer = Tracer(model)
    tracer.stack = ModuleStack(model)
    try:
        with preserved_state(model), torch.no_grad(), _Mode(tracer, dispatch):
            out = call_model(model, example_inputs)
    except TraceError:
        raise
    except Exception as exc:  # the model's own forward failed on this input
        raise TraceError(
            f"fastprune: cannot trace {type(model).__name__}: its forward failed on the example input "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        tracer.stack.remove()
    for t in flat_tensors(out):
        tg = tracer.tag(t)
        if tg is not None:
            tracer.trace.output_nodes.update(int(i) for i in tg.ids.tolist())
    tracer.trace.order = tracer.stack.order
    tracer.trace.output_shapes = [tuple(t.shape) for t in flat_tensors(out)]
    return tracer.trace
