"""How channels flow through each torch op (the rules the tracer applies).

Every rule receives the tracer, the call and its result, reads the input tags and sets the
output tags. Anything not covered blocks the channels that reach it, with its name. The rules
live by kind: `ops` (op tables), `layout` (layout replay), `modules` (module ops); `common`
holds what they share; this module dispatches."""
from __future__ import annotations

from typing import Any

from ..trace import Tracer, flat_tensors, op_name
from .common import RULES, _tagged
from .ops import IGNORED, UNARY, _EW, setitem
from .layout import LAYOUT, layout
from . import modules  # noqa: F401 - its rules (conv, linear, norms) register on import


def dispatch(tr: Tracer, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Apply the rule for `func` (the tracer's hook for every torch call)."""
    name = op_name(func)
    if name.startswith("_") and not name.startswith("__") and name not in RULES:
        name = name.lstrip("_")  # private aliases: _threshold, _max_pool2d ...
    if name in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear"):
        RULES[name](tr, name, args, kwargs, out)
        return
    if name == "__setitem__":
        tr.clear_uniform(args[0])  # part of it may now differ
        setitem(tr, name, args, kwargs, out)
        return
    if (name.endswith("_") and not name.startswith("__")) or name.startswith("__i"):
        ins = flat_tensors((args, kwargs))
        if ins and tr.is_uniform(ins[0]) and any(t is not ins[0] and t.numel() > 1 and not tr.is_uniform(t) for t in ins):
            tr.clear_uniform(ins[0])
    if name in IGNORED:
        if name in UNIFORM_NEW:
            for t in flat_tensors(out):
                tr.set_uniform(t)
        return
    tagged = _tagged(tr, args, kwargs)
    if not tagged:
        if name in UNIFORM_NEW:
            for t in flat_tensors(out):
                tr.set_uniform(t)
        elif name in _EW or name in LAYOUT_SET or name in UNARY_SET:
            ins = flat_tensors((args, kwargs))
            if ins and all(tr.is_uniform(t) or t.numel() == 1 for t in ins) and any(tr.is_uniform(t) for t in ins):
                for t in flat_tensors(out):
                    tr.set_uniform(t)
            else:
                _derive(tr, args, kwargs, out)
        return
    if not flat_tensors(out):
        return  # size(), dim(), item() ...: no tensor comes out
    if name in LAYOUT_SET:
        layout(tr, name, func, args, kwargs, out)
        return
    r = RULES.get(name)
    if r is None:
        for _, g in tagged:
            tr.block(g.ids, f"op '{name}' is not understood")
        return
    r(tr, name, args, kwargs, out)


LAYOUT_SET = set(LAYOUT)
UNIFORM_NEW = set("zeros ones full empty new_zeros new_ones new_full new_empty".split())
UNARY_SET = set(UNARY)


def _derive(tr: Tracer, args: tuple, kwargs: dict, out: Any) -> None:
    """Track tensors computed elementwise from same-length 1-D parameters/buffers."""
    ins = flat_tensors((args, kwargs))
    outs = flat_tensors(out)
    if not ins or len(outs) != 1:
        return
    n = outs[0].numel()
    srcs: list[tuple[str, str]] = []
    for t in ins:
        if t.numel() == 1 and t.ndim <= 1 and tr.param_sources(t) is None:
            continue  # a scalar (eps, a constant)
        s = tr.param_sources(t)
        if s is None or t.numel() != n:
            return
        srcs.extend(x for x in s if x not in srcs)
    if srcs and n > 1 and sum(d > 1 for d in outs[0].shape) == 1:
        tr.set_derived(outs[0], srcs)
