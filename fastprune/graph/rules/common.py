"""What every channel-flow rule shares: the rule table, argument access, the tagged inputs
and the one prologue that finds an op's input and its tag."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..trace import Tag, Tracer, flat_tensors


Rule = Callable[[Tracer, str, tuple, dict, Any], None]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _tagged(tr: Tracer, args: tuple, kwargs: dict) -> list[tuple[torch.Tensor, Tag]]:
    out = []
    for t in flat_tensors((args, kwargs)):
        tg = tr.tag(t)
        if tg is not None:
            out.append((t, tg))
    return out


def _set_all(tr: Tracer, out: Any, tag: Tag | None, like: torch.Size | None = None) -> None:
    for t in flat_tensors(out):
        if tag is not None and (like is None or t.shape == like) and t.ndim > tag.dim:
            tr.set_tag(t, tag)


def _input(tr: Tracer, args: tuple, kwargs: dict) -> tuple[Any, Tag | None]:
    """The op's input tensor (first positional argument or `input=`) and its channel tag."""
    x = args[0] if args else kwargs.get("input")
    return x, tr.tag(x)
