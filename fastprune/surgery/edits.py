"""Turn a removal into per-module edits (pure data), and apply edits to a model.

An edit says, per module, which indices of which parameter/buffer axes are kept and which
attributes change. Edits are JSON-serialisable, so a pruned model can be rebuilt from a
fresh one without tracing again.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..graph.graph import DependencyGraph

Edits = dict[str, dict[str, Any]]


def removed_classes(graph: DependencyGraph, removal: Mapping[str, Any], model: nn.Module,
                    allow_output: bool = False) -> dict[int, set[int]]:
    """Validated group channels to remove: {group id: {group channel}}."""
    if not isinstance(removal, Mapping):
        raise TypeError(f"fastprune: removal must be a Plan or a dict {{producer name: indices}}, got {type(removal).__name__}")
    names = dict(model.named_modules())
    out: dict[int, set[int]] = defaultdict(set)
    said: dict[int, tuple[str, set[int]]] = {}
    for name, idx in removal.items():
        if not isinstance(name, str) or name not in names:
            raise ValueError(f"fastprune: removal names a module that does not exist: {name!r}")
        g = graph.group_of(name)
        try:
            idx = [int(i) for i in idx]
        except (TypeError, ValueError):
            raise TypeError(f"fastprune: indices for '{name}' must be a list of integers") from None
        mine: set[int] = set()
        for i in idx:
            grp, c = graph.locate(name, i)
            mine.add(c)
        prev = said.setdefault(g.id, (name, mine))
        if prev[1] != mine:  # coupled producers must name the same channels (no silent widening)
            raise ValueError(f"fastprune: '{prev[0]}' and '{name}' are coupled (group {g.id}) but the removal "
                             "names different channels for them; name one producer or the same channels")
        out[g.id].update(mine)
    out = defaultdict(set, {k: v for k, v in out.items() if v})
    for gid, cs in out.items():
        grp = graph.groups[gid]
        if grp.blocked_by is not None:
            raise ValueError(f"fastprune: group {gid} (producers {[m.module for m in grp.producers]}) cannot be pruned: {grp.blocked_by}")
        if grp.touches_output and not allow_output:
            raise ValueError(f"fastprune: group {gid} (producers {[m.module for m in grp.producers]}) feeds the model's output; "
                             "pass allow_output=True to remove output channels")
        if len(cs) >= grp.channels:
            raise ValueError(f"fastprune: removal takes all {grp.channels} channels of group {gid} "
                             f"(producers {[m.module for m in grp.producers]}); at least one must stay")
    return dict(out)


def _positions(graph: DependencyGraph, removed: dict[int, set[int]]) -> dict[tuple[str, str, str], set[int]]:
    """Removed positions per (module, kind, role)."""
    roots = graph._roots
    classes = set()
    for gid, cs in removed.items():
        grp = graph.groups[gid]
        classes.update(grp.classes[c] for c in cs)
    wanted = np.array(sorted(classes), dtype=np.int64)
    pos: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for r in graph.trace.records:
        hit = np.nonzero(np.isin(roots[r.nodes], wanted))[0]
        if len(hit):
            pos[(r.module, r.kind, r.role)].update(hit.tolist())
    return pos


def _keep(n: int, gone: set[int]) -> list[int]:
    return [i for i in range(n) if i not in gone]


def _conv_edit(name: str, call: Any, out_rm: set[int], in_rm: set[int]) -> dict[str, Any]:
    g, cin, cout = call.groups, call.in_channels, call.out_channels
    in_per, out_per = cin // g, cout // g
    kept_groups, P, Q = [], None, None
    for G in range(g):
        ins = {j - G * in_per for j in in_rm if G * in_per <= j < (G + 1) * in_per}
        outs = {o - G * out_per for o in out_rm if G * out_per <= o < (G + 1) * out_per}
        if len(ins) == in_per and len(outs) == out_per and g > 1:
            continue
        if P is None:
            P, Q = ins, outs
        elif ins != P or outs != Q:
            raise ValueError(f"fastprune: removal would leave conv groups of '{name}' unequal")
        kept_groups.append(G)
    P, Q = P or set(), Q or set()
    keep_in_pos = _keep(in_per, P)
    keep_out_pos = _keep(out_per, Q)
    keep_out = [G * out_per + q for G in kept_groups for q in keep_out_pos]
    keep_in = [G * in_per + p for G in kept_groups for p in keep_in_pos]
    if call.op == "conv_transpose":  # weight (Cin, Cout/g, k...)
        params = {"weight": [[0, keep_in], [1, keep_out_pos]], "bias": [[0, keep_out]]}
    else:  # weight (Cout, Cin/g, k...)
        params = {"weight": [[0, keep_out], [1, keep_in_pos]], "bias": [[0, keep_out]]}
    attrs = {"in_channels": len(keep_in), "out_channels": len(keep_out), "groups": len(kept_groups)}
    return {"params": params, "attrs": attrs}


def compute_edits(graph: DependencyGraph, removed: dict[int, set[int]], model: nn.Module) -> Edits:
    """Per-module edits that remove the given group channels."""
    pos = _positions(graph, removed)
    mods = dict(model.named_modules())
    by_mod: dict[str, dict[tuple[str, str], set[int]]] = defaultdict(dict)
    for (m, kind, role), s in pos.items():
        by_mod[m][(kind, role)] = s
    edits: Edits = {}
    for name, roles in by_mod.items():
        mod = mods[name]
        params: dict[str, list] = {}
        attrs: dict[str, Any] = {}
        call = graph.trace.calls.get(name)
        out_rm = set().union(*[s for (k, r), s in roles.items() if r == "out" and k != "param"])
        in_rm = set().union(*[s for (k, r), s in roles.items() if r == "in"])
        if call is not None and (out_rm or in_rm):
            if call.op == "linear":
                keep_out = _keep(call.out_channels, out_rm)
                keep_in = _keep(call.in_channels, in_rm)
                params = {"weight": [[0, keep_out], [1, keep_in]], "bias": [[0, keep_out]]}
                attrs = {"in_features": len(keep_in), "out_features": len(keep_out)}
            else:
                e = _conv_edit(name, call, out_rm, in_rm)
                params, attrs = e["params"], e["attrs"]
        for (kind, role), s in roles.items():
            if role == "norm":
                n = _channel_count(mod, kind)
                keep = _keep(n, s)
                for p in ("weight", "bias", "running_mean", "running_var"):
                    params[p] = [[0, keep]]
                if kind == "groupnorm":
                    attrs["num_groups"] = mod.num_groups * len(keep) // n
                    attrs["num_channels"] = len(keep)
                else:
                    attrs["num_features"] = len(keep)
            elif role.startswith("param:"):
                _, pname, axis = role.split(":")
                t = getattr(mod, pname)
                params.setdefault(pname, []).append([int(axis), _keep(t.shape[int(axis)], s)])
                if kind == "prelu":
                    attrs["num_parameters"] = t.shape[int(axis)] - len(s)
        # drop entries for absent tensors and no-op slices
        clean = {}
        for pname, ops in params.items():
            t = getattr(mod, pname, None)
            if not isinstance(t, torch.Tensor):
                continue
            ops = [[a, k] for a, k in ops if len(k) != t.shape[a]]
            if ops:
                clean[pname] = ops
        attrs = {k: v for k, v in attrs.items() if hasattr(mod, k) and getattr(mod, k) != v}
        if clean or attrs:
            edits[name] = {"params": clean, "attrs": attrs,
                           "shapes": {p: list(getattr(mod, p).shape) for p in clean}}
    return edits


def _channel_count(mod: nn.Module, kind: str) -> int:
    for a in ("num_features", "num_channels"):
        if hasattr(mod, a):
            return int(getattr(mod, a))
    for p in ("weight", "running_mean"):
        t = getattr(mod, p, None)
        if isinstance(t, torch.Tensor):
            return t.shape[0]
    raise ValueError(f"fastprune: cannot tell how many channels norm layer of kind {kind} has")


# attributes an edit may set (compute_edits sets no others): whole numbers, or a list of them
EDIT_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_groups",
              "num_channels", "num_features", "num_parameters", "normalized_shape")


def _ints(v: Any, nonneg: bool = True) -> bool:
    return isinstance(v, list) and all(type(i) is int and (i >= 0 or not nonneg) for i in v)


def check_edits(edits: Any) -> None:
    """ValueError unless `edits` has the shape compute_edits gives (e.g. read from a file):
    {module: {"params": {name: [[axis, [index, ...]], ...]}, "attrs": {EDIT_ATTRS: int}, "shapes"?}}."""
    if not isinstance(edits, dict):
        raise ValueError(f"fastprune: surgery edits must be a dict of modules, got {type(edits).__name__}")
    for name, e in edits.items():
        where = f"fastprune: the surgery edit of {str(name)[:80]!r}"
        if not isinstance(e, dict) or not isinstance(e.get("params"), dict) or not isinstance(e.get("attrs"), dict) \
                or not isinstance(e.get("shapes", {}), dict):
            raise ValueError(f"{where} is not {{'params': ..., 'attrs': ...}}")
        for pname, ops in e["params"].items():
            if not isinstance(ops, list) or not all(isinstance(op, list) and len(op) == 2 and type(op[0]) is int
                                                    and _ints(op[1]) for op in ops):
                raise ValueError(f"{where} slices {str(pname)[:80]!r} with something other than [axis, [indices]]")
        for pname, shape in e.get("shapes", {}).items():
            if not _ints(shape):
                raise ValueError(f"{where} gives {str(pname)[:80]!r} a shape that is not a list of sizes")
        for k, v in e["attrs"].items():
            if k not in EDIT_ATTRS or not (type(v) is int and v >= 0 or k == "normalized_shape" and _ints(v)):
                raise ValueError(f"{where} sets {str(k)[:80]!r} to {str(v)[:80]}: not an attribute surgery sets")


def apply_edits(model: nn.Module, edits: Edits) -> None:
    """Slice parameters/buffers and set attributes in place (validated first: all or nothing)."""
    check_edits(edits)
    mods = dict(model.named_modules())
    for name, e in edits.items():
        if name not in mods:
            raise ValueError(f"fastprune: the model has no module named '{name}' (plan made for another architecture?)")
        for pname, shape in e.get("shapes", {}).items():
            t = getattr(mods[name], pname, None)
            if not isinstance(t, torch.Tensor) or list(t.shape) != list(shape):
                have = None if not isinstance(t, torch.Tensor) else list(t.shape)
                raise ValueError(f"fastprune: '{name}.{pname}' has shape {have}, the plan expects {shape}")
        for pname, ops in e["params"].items():
            t = getattr(mods[name], pname, None)
            if not isinstance(t, torch.Tensor) or any(
                    not 0 <= axis < t.dim() or any(k >= t.shape[axis] for k in keep) for axis, keep in ops):
                raise ValueError(f"fastprune: the surgery edit slices '{name}.{pname}' beyond its shape "
                                 f"({None if not isinstance(t, torch.Tensor) else list(t.shape)})")
    with torch.no_grad():
        for name, e in edits.items():
            mod = mods[name]
            for pname, ops in e["params"].items():
                t = getattr(mod, pname)
                new = t.detach()
                for axis, keep in ops:
                    new = new.index_select(int(axis), torch.as_tensor(keep, dtype=torch.long, device=new.device))
                new = new.contiguous()
                if pname in mod._parameters:
                    mod._parameters[pname] = nn.Parameter(new, requires_grad=t.requires_grad)
                else:
                    mod._buffers[pname] = new
            for k, v in e["attrs"].items():
                if k == "normalized_shape":
                    v = tuple(v)
                setattr(mod, k, v)
