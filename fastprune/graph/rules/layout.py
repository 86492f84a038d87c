"""Channel-flow rule of layout ops (view, reshape, permute, ...): the op is replayed on a map of
channel indices and the result analysed."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..trace import Tag, Tracer, flat_tensors


# -- layout ops: replay the op on a map of channel indices ----------------------------------------
LAYOUT = """view reshape flatten unflatten squeeze unsqueeze permute transpose movedim moveaxis swapaxes
swapdims t T mT mH H expand expand_as repeat view_as reshape_as __getitem__ narrow select unfold tile
broadcast_to squeeze_ unsqueeze_ transpose_ t_ swapaxes_ swapdims_ ravel flip fliplr flipud roll
adjoint atleast_2d atleast_3d""".split()


def _channel_map(x: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * x.ndim
    shape[dim] = x.shape[dim]
    return torch.arange(x.shape[dim], dtype=torch.float32, device=x.device).view(shape).expand(x.shape)


def _replay(name: str, func: Any, m: torch.Tensor, x: torch.Tensor, args: tuple, kwargs: dict) -> Any:
    if name in ("T", "mT", "mH", "H"):
        return getattr(m, name)
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    base = {"view": "reshape", "view_as": "reshape_as"}.get(base, base)  # the map is not contiguous
    rest = list(args)
    pos = next(i for i, a in enumerate(rest) if a is x)
    rest.pop(pos)
    if name == "__getitem__":
        return m[rest[0]]
    if hasattr(torch.Tensor, base):
        return getattr(m, base)(*rest, **kwargs)
    return getattr(torch, base)(m, *rest, **kwargs)


def _analyse(r: torch.Tensor, C: int) -> tuple[int | None, np.ndarray | None, str | None]:
    """Which single dimension of `r` carries channels, and the channel index along it."""
    varying = []
    for d in range(r.ndim):
        if r.shape[d] <= 1 or r.stride(d) == 0:
            continue
        if bool((r != r.narrow(d, 0, 1)).any()):
            varying.append(d)
    if not varying:
        return None, None, None
    if len(varying) == 2:
        split = _split(r, varying, C)
        if split is not None:
            return split
    if len(varying) > 1:
        return None, None, "splits the channel dimension across several dimensions"
    D = varying[0]
    idx = [0] * r.ndim
    idx[D] = slice(None)
    v = r[tuple(idx)].round().long().cpu().numpy()
    inner = 1
    while inner < len(v) and v[inner] == v[0]:
        inner += 1
    n = len(v)
    pattern = (np.arange(n) // inner) % C
    if v[0] != 0 or n % (inner * C) != 0 or not np.array_equal(v, pattern):
        return None, None, "selects channels at fixed positions (it would pick the wrong channels after pruning)"
    return D, v, None


class Split(tuple):
    """(outer dim, inner dim, inner size): channels viewed as (groups, channels per group)."""


def _split(r: torch.Tensor, dims: list[int], C: int) -> tuple | None:
    """Channels reshaped into (groups, per group) on two dimensions, outer first (channel shuffle)."""
    d1, d2 = dims
    a, b = r.shape[d1], r.shape[d2]
    if a * b != C:
        return None
    idx = [0] * r.ndim
    idx[d1], idx[d2] = slice(None), slice(None)
    R = r[tuple(idx)].round().long().cpu()
    if torch.equal(R, torch.arange(C).view(a, b)):
        return Split((d1, d2, b)), None, None
    return None


def layout(tr: Tracer, name: str, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    tensors = flat_tensors((args, kwargs))
    outs = flat_tensors(out)
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    tg = tr.tag(x)
    if tg is None or not outs:
        # the values come from the first argument; other tensors only lend a shape (expand_as ...)
        for t in tensors:
            if t is not x and tr.tag(t) is not None and name == "__getitem__":
                tr.block(tr.tag(t).ids, "indexing with a tensor of tracked channels")
        return
    others = [t for t in tensors if t is not x and tr.tag(t) is not None]
    if others and name == "__getitem__":
        tr.block(tg.ids, "indexing with a tensor of tracked channels")
        return
    C = x.shape[tg.dim]
    try:
        m = _channel_map(x, tg.dim)
        r = _replay(name, func, m, x, args, kwargs)
    except Exception as exc:  # the op does not replay on the index map
        tr.block(tg.ids, f"op '{name}' could not be analysed ({type(exc).__name__})")
        return
    if not isinstance(r, torch.Tensor) or r.shape != outs[0].shape:
        tr.block(tg.ids, f"op '{name}' could not be analysed")
        return
    D, v, why = _analyse(r, C)
    if why is not None:
        tr.block(tg.ids, f"op '{name}' {why}")
        return
    if isinstance(D, Split):
        # the per-group position is the channel now: position p of every group goes together,
        # so the groups stay equal (and a later shuffle/merge stays valid) after pruning
        _, inner, b = D
        for p in range(b):
            for G in range(1, C // b):
                tr.uf.union(int(tg.ids[p]), int(tg.ids[G * b + p]))
        tr.set_tag(outs[0], Tag(inner, tg.ids[:b]))
        return
    if D is None:
        if C > 1:
            tr.block(tg.ids, f"op '{name}' drops the channel dimension")
        return
    tr.set_tag(outs[0], Tag(D, tg.ids[v]))


