"""Channel-flow rules of the ops modules call: convolutions, linear layers, normalisations, PReLU."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..trace import ModuleCall, Tag, Tracer
from .common import _input, arg, rule


# -- modules: conv, linear, norms ---------------------------------------------------------------
def _module_for(tr: Tracer, *tensors: Any) -> str | None:
    for t in tensors:
        own = tr.owner(t)
        if own is not None:
            return own[0]
    return None


@rule("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = arg(args, kwargs, 0, "input")
    w = arg(args, kwargs, 1, "weight")
    b = arg(args, kwargs, 2, "bias")
    groups = arg(args, kwargs, 6, "groups", 1)
    transposed = "transpose" in name
    tx = tr.tag(x)
    own = tr.owner(w)
    if own is None or own[1] != "weight" or (b is not None and tr.owner(b) != (own[0], "bias")):
        tr.block(tx.ids if tx is not None else None, f"op '{name}' uses a weight that is not a module's 'weight' parameter")
        ch = 1 if x.ndim == w.ndim else 0
        tr.set_tag(out, Tag(ch, tr.fresh(out.shape[ch], blocked=f"op '{name}' uses a computed weight{tr.where()}")))
        return
    mod = own[0]
    ch = 1 if x.ndim == w.ndim else 0
    if tx is not None and tx.dim != ch:
        tr.block(tx.ids, f"conv '{mod}' reads a tensor whose tracked channels are not its channel dimension")
        tx = None
    cin, cout = x.shape[ch], out.shape[ch]
    g = int(groups)
    in_per, out_per = cin // g, cout // g
    base = "conv_transpose" if transposed else "conv"
    tr.trace.calls[mod] = _call(tr, base, g, cin, cout, mod)
    if g == 1:
        if tx is not None:
            tr.record(tx.ids, mod, base, "in")
        oids = tr.fresh(cout)
        tr.record(oids, mod, base, "out")
    elif in_per == 1:  # depthwise (channel multiplier out_per): whole conv groups go together
        xids = tx.ids if tx is not None else tr.fresh(cin, blocked=f"depthwise conv '{mod}' reads untracked channels (the model input)")
        oids = np.repeat(xids, out_per)
        tr.record(xids, mod, "depthwise", "in")
        tr.record(oids, mod, "depthwise", "out")
    else:  # grouped: position p of every group goes together, so groups stay equal
        if tx is not None:
            for p in range(in_per):
                for G in range(1, g):
                    tr.uf.union(int(tx.ids[p]), int(tx.ids[G * in_per + p]))
            tr.record(tx.ids, mod, "grouped", "in")
        oids = tr.fresh(cout)
        for q in range(out_per):
            for G in range(1, g):
                tr.uf.union(int(oids[q]), int(oids[G * out_per + q]))
        tr.record(oids, mod, "grouped", "out")
    tr.set_tag(out, Tag(ch, oids))


def _call(tr: Tracer, op: str, g: int, cin: int, cout: int, mod: str):
    prev = tr.trace.calls.get(mod)
    own = tr.stack is not None and tr.stack.top == mod
    if prev is not None:
        own = own and prev.own_call
    return ModuleCall(op, g, cin, cout, own)


@rule("linear")
def linear(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = arg(args, kwargs, 0, "input")
    w = arg(args, kwargs, 1, "weight")
    b = arg(args, kwargs, 2, "bias")
    tx = tr.tag(x)
    own = tr.owner(w)
    last = out.ndim - 1
    if own is None or own[1] != "weight" or (b is not None and tr.owner(b) != (own[0], "bias")):
        tr.block(tx.ids if tx is not None else None, "op 'linear' uses a weight that is not a module's 'weight' parameter")
        tr.set_tag(out, Tag(last, tr.fresh(out.shape[-1], blocked=f"op 'linear' uses a computed weight{tr.where()}")))
        return
    mod = own[0]
    tr.trace.calls[mod] = _call(tr, "linear", 1, x.shape[-1], out.shape[-1], mod)
    if tx is not None and tx.dim != x.ndim - 1:
        # the linear acts on another dimension: channels pass through untouched
        tr.set_tag(out, tx)
        return
    if tx is not None:
        tr.record(tx.ids, mod, "linear", "in")
    oids = tr.fresh(out.shape[-1])
    tr.record(oids, mod, "linear", "out")
    tr.set_tag(out, Tag(last, oids))


def _norm_module(tr: Tracer, *tensors: Any) -> str | None:
    mod = _module_for(tr, *tensors)
    if mod is None and tr.stack is not None:
        mod = tr.stack.top
    return mod


@rule("batch_norm", "instance_norm")
def batch_norm(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tx = _input(tr, args, kwargs)
    if tx is None:
        return
    if name == "batch_norm":
        tensors = [arg(args, kwargs, 3, "weight"), arg(args, kwargs, 4, "bias"),
                   arg(args, kwargs, 1, "running_mean"), arg(args, kwargs, 2, "running_var")]
    else:
        tensors = [arg(args, kwargs, 3, "weight"), arg(args, kwargs, 4, "bias"),
                   arg(args, kwargs, 1, "running_mean"), arg(args, kwargs, 2, "running_var")]
    ch = 1 if x.ndim >= 2 else 0
    if tx.dim != ch:
        tr.block(tx.ids, f"op '{name}' normalises a dimension other than the tracked channels")
        return
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    if any(tr.owner(t) is None for t in present):
        tr.block(tx.ids, f"op '{name}' uses statistics or affine parameters that are not module parameters/buffers")
        return
    mod = _norm_module(tr, *present)
    if mod is not None:
        tr.record(tx.ids, mod, "batchnorm" if name == "batch_norm" else "instancenorm", "norm")
    tr.set_tag(out, tx)


@rule("group_norm")
def group_norm(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tx = _input(tr, args, kwargs)
    if tx is None:
        return
    G = int(arg(args, kwargs, 1, "num_groups"))
    w, b = arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias")
    if tx.dim != 1:
        tr.block(tx.ids, "op 'group_norm' normalises a dimension other than the tracked channels")
        return
    C = x.shape[1]
    if G == 1 and C > 1:
        tr.block(tx.ids, "op 'group_norm' with one group normalises all channels together "
                         "(removing any channel changes the others)")
        tr.set_tag(out, tx)
        return
    present = [t for t in (w, b) if isinstance(t, torch.Tensor)]
    if any(tr.owner(t) is None for t in present):
        tr.block(tx.ids, "op 'group_norm' uses affine parameters that are not module parameters")
        return
    cpg = C // G
    for G_ in range(G):  # a whole normalisation group goes at once: the others keep their statistics
        for j in range(1, cpg):
            tr.uf.union(int(tx.ids[G_ * cpg]), int(tx.ids[G_ * cpg + j]))
    mod = _norm_module(tr, *present)
    if mod is not None:
        tr.record(tx.ids, mod, "groupnorm", "norm")
    tr.set_tag(out, tx)


@rule("layer_norm", "rms_norm")
def layer_norm(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tx = _input(tr, args, kwargs)
    if tx is None:
        return
    shape = arg(args, kwargs, 1, "normalized_shape")
    k = 1 if isinstance(shape, int) else len(shape)
    if tx.dim >= x.ndim - k:
        tr.block(tx.ids, f"op '{name}' normalises over the channel dimension (removing a channel changes the others)")
        tr.set_tag(out, tx)
        return
    tr.set_tag(out, tx)


@rule("prelu")
def prelu(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = arg(args, kwargs, 0, "input")
    w = arg(args, kwargs, 1, "weight")
    tx = tr.tag(x)
    if tx is None:
        return
    if w.numel() > 1:
        own = tr.owner(w)
        ch = 1 if x.ndim >= 2 else 0
        if own is None or tx.dim != ch:
            tr.block(tx.ids, "op 'prelu' with per-channel weights that are not a module parameter")
        else:
            tr.record(tx.ids, own[0], "prelu", f"param:{own[1]}:0")
    tr.set_tag(out, tx)


