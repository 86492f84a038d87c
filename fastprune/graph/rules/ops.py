"""Channel-flow rules of torch ops, by table: elementwise (broadcasting), per-channel ops on
other dimensions (pooling, resampling), reductions and ops along one dimension, and
cat / stack / chunk / split."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..trace import Tag, Tracer, flat_tensors
from .common import _input, _norm_dim, _set_all, _tagged, arg, rule
from .layout import Split, _analyse, _channel_map


# -- elementwise (broadcasting) ------------------------------------------------------------
ELEMENTWISE = """
abs absolute acos arccos acosh asin asinh atan atanh atan2 arctan2 ceil clamp clamp_min clamp_max clip
cos cosh deg2rad digamma erf erfc erfinv exp exp2 expm1 fix floor frac lgamma log log10 log1p log2
logit i0 isnan isinf isfinite isposinf isneginf isreal nan_to_num neg negative positive pow rad2deg reciprocal
round rsqrt sigmoid sign sgn signbit sin sinc sinh sqrt square tan tanh trunc xlogy hypot copysign
add sub subtract mul multiply div divide true_divide floor_divide remainder fmod rsub maximum minimum
fmax fmin lerp addcmul addcdiv where masked_fill eq ne lt le gt ge greater greater_equal less less_equal
not_equal equal logical_and logical_or logical_xor logical_not bitwise_and bitwise_or bitwise_xor
bitwise_not heaviside nextafter float_power ldexp
relu relu6 elu selu celu gelu silu mish hardswish hardsigmoid hardtanh leaky_relu rrelu softplus
softsign softshrink hardshrink tanhshrink threshold logsigmoid log_sigmoid rrelu_with_noise sigmoid_ tanh_ relu_ elu_ celu_
special_expit special_erf special_erfc special_logit special_exp2 special_expm1 special_sinc square_ conj real
selu_ leaky_relu_ hardtanh_ rrelu_ threshold_
dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
fill_ zero_ copy_ masked_fill_ clamp_
__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
__rtruediv__ __itruediv__ __div__ __rdiv__ __idiv__ __floordiv__ __rfloordiv__ __ifloordiv__ __pow__
__rpow__ __ipow__ __mod__ __rmod__ __imod__ __neg__ __pos__ __abs__ __and__ __rand__ __iand__ __or__
__ror__ __ior__ __xor__ __rxor__ __ixor__ __invert__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__
__matmul_scalar__
"""
_EW = set(ELEMENTWISE.split())
for _n in list(_EW):
    if not _n.startswith("_") and not _n.endswith("_"):
        _EW.add(_n + "_")


@rule(*_EW)
def elementwise(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    outs = flat_tensors(out)
    if not outs:
        return
    ref = outs[0]
    nd = ref.ndim
    ins = [t for t in flat_tensors((args, kwargs))]
    D = None
    for t in ins:
        tg = tr.tag(t)
        if tg is None:
            continue
        d = nd - (t.ndim - tg.dim)
        if D is None:
            D = d
        elif d != D:
            tr.block_tensors(ins, f"op '{name}' combines tensors whose channels lie on different dimensions")
            return
    if D is None or D < 0 or D >= nd:
        tr.block_tensors(ins, f"op '{name}' changes the tensor rank in a way that loses the channel dimension")
        return
    C = ref.shape[D]
    ids = None
    for t in ins:
        tg = tr.tag(t)
        if tg is not None:
            if t.shape[tg.dim] == C:
                if ids is None:
                    ids = tg.ids
                else:
                    tr.uf.union_arrays(ids, tg.ids)
            elif t.shape[tg.dim] != 1:
                tr.block(tg.ids, f"op '{name}' broadcasts {t.shape[tg.dim]} channels to {C}")
                return
    for t in ins:
        if tr.tag(t) is not None:
            continue
        k = t.ndim - (nd - D)
        if k < 0 or t.shape[k] == 1:
            continue
        if ids is None:
            continue
        if tr.is_uniform(t):
            continue  # same value (or law) in every channel: a shape-derived constant prunes cleanly
        own = tr.param_axis(t, k, C)
        src = tr.param_sources(t) if own is None else None
        if own is not None:
            mod, pname, axis = own
            tr.record(ids, mod, "param", f"param:{pname}:{axis}")
        elif src is not None and t.shape[k] == C == t.numel():
            for mod, pname in src:  # a per-channel constant computed from 1-D parameters/buffers
                tr.record(ids, mod, "param", f"param:{pname}:0")
        else:
            tr.block(ids, f"op '{name}' combines the channels with a tensor created in forward "
                          f"(a constant or the model input) that has {t.shape[k]} channels")
    if ids is None:
        return
    tag = Tag(D, ids)
    for t in outs:
        if t.ndim == nd and t.shape[D] == C:
            tr.set_tag(t, tag)


UNARY = """to type type_as float double half bfloat16 cpu cuda clone detach detach_ contiguous requires_grad_
data zeros_like ones_like empty_like full_like rand_like randn_like randint_like retain_grad pin_memory
share_memory_ coalesce""".split()


@rule(*UNARY)
def unary(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Output is the first argument (converted, copied or shaped like it); other tensors only lend dtype."""
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    for t in flat_tensors(out):
        if t.shape == x.shape:
            tr.set_tag(t, tg)


IGNORED = set("""new_zeros new_ones new_empty new_full new_tensor new_empty_strided size dim numel
stride storage_offset data_ptr element_size is_contiguous item tolist numpy""".split())


@rule("pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    r = int(arg(args, kwargs, 1, "upscale_factor" if name == "pixel_shuffle" else "downscale_factor"))
    if tg is None:
        return
    if tg.dim != x.ndim - 3:
        tr.block(tg.ids, f"op '{name}' moves the tracked channels into spatial positions")
        return
    if name == "pixel_shuffle":  # each output channel is a block of r*r input channels
        k = r * r
        for j in range(0, len(tg.ids), k):
            for i in range(1, k):
                tr.uf.union(int(tg.ids[j]), int(tg.ids[j + i]))
        ids = tg.ids[::k]
    else:
        ids = np.repeat(tg.ids, r * r)
    tr.set_tag(out, Tag(tg.dim, ids))


# -- ops that act per channel on other dimensions (pooling, resampling) -----------------------
def _spatial_count(name: str, ndim: int) -> int:
    for k in ("1d", "2d", "3d"):
        if k in name:
            return int(k[0])
    return max(ndim - 2, 1)


@rule("interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "grid_sample",
      "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
      "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
      "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
      "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
      "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
      "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "lp_pool3d",
      "fractional_max_pool2d", "fractional_max_pool3d", "fractional_max_pool2d_with_indices",
      "fractional_max_pool3d_with_indices", "pixel_unshuffle_spatial")
def spatial(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    k = _spatial_count(name, x.ndim)
    if tg.dim >= x.ndim - k:
        tr.block(tg.ids, f"op '{name}' resamples along the channel dimension")
        return
    C = x.shape[tg.dim]
    for t in flat_tensors(out):
        if t.ndim == x.ndim and t.shape[tg.dim] == C:
            tr.set_tag(t, tg)


@rule("pad")
def pad(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    p = arg(args, kwargs, 1, "pad")
    if tg is None:
        return
    if tg.dim >= x.ndim - len(p) // 2:
        tr.block(tg.ids, "op 'pad' pads the channel dimension")
        return
    _set_all(tr, out, tg)


@rule("max_unpool1d", "max_unpool2d", "max_unpool3d")
def unpool(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    idx = arg(args, kwargs, 1, "indices")
    tx, ti = tr.tag(x), tr.tag(idx)
    if tx is not None and ti is not None and tx.dim == ti.dim and len(tx.ids) == len(ti.ids):
        tr.uf.union_arrays(tx.ids, ti.ids)
    elif ti is not None or tx is not None:
        # the values must keep exactly the channels whose indices they use: couple with the
        # (untracked) pooled tensor by blocking both sides
        tr.block(tx.ids if tx is not None else None, f"op '{name}' reads indices of untracked channels")
        tr.block(ti.ids if ti is not None else None, f"op '{name}' reads values of untracked channels")
        return
    if tx is not None:
        _set_all(tr, out, tx)


# -- reductions and ops along one dimension --------------------------------------------------
def _dims(d: Any, ndim: int) -> list[int] | None:
    if d is None:
        return None
    if isinstance(d, int):
        return [_norm_dim(d, ndim)]
    return [_norm_dim(int(x), ndim) for x in d]


@rule("sum", "mean", "nansum", "nanmean", "amax", "amin", "prod", "std", "var", "norm", "logsumexp",
      "median", "nanmedian", "mode", "any", "all", "argmax", "argmin", "max", "min", "count_nonzero",
      "std_mean", "var_mean", "aminmax")
def reduction(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    if name in ("max", "min") and (len(args) > 1 and isinstance(args[1], torch.Tensor) or isinstance(kwargs.get("other"), torch.Tensor)):
        return elementwise(tr, name, args, kwargs, out)
    tg = tr.tag(x)
    if tg is None:
        tagged = _tagged(tr, args, kwargs)
        if tagged:
            tr.block(np.concatenate([t.ids for _, t in tagged]), f"op '{name}' is not understood")
        return
    if name == "norm":
        d = arg(args, kwargs, 2, "dim")
        keep = arg(args, kwargs, 3, "keepdim", False)
    else:
        d = arg(args, kwargs, 1, "dim")
        keep = arg(args, kwargs, 2, "keepdim", False)
    if not isinstance(d, (int, list, tuple)) or (isinstance(d, (list, tuple)) and not d):
        d = None
    dims = _dims(d, x.ndim)
    if dims is None or tg.dim in dims:
        tr.block(tg.ids, f"op '{name}' reduces over the channel dimension")
        return
    newdim = tg.dim if keep else tg.dim - sum(1 for x_ in dims if x_ < tg.dim)
    C = x.shape[tg.dim]
    for t in flat_tensors(out):
        if t.ndim > newdim and t.shape[newdim] == C:
            tr.set_tag(t, Tag(newdim, tg.ids))


@rule("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp",
      "normalize", "sort", "argsort", "topk", "kthvalue", "msort", "gumbel_softmax")
def along_dim(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    if name == "normalize":
        d = arg(args, kwargs, 2, "dim", 1)
    elif name in ("topk", "kthvalue"):
        d = arg(args, kwargs, 2, "dim", -1)
    elif name in ("sort", "argsort"):
        d = arg(args, kwargs, 1, "dim", -1)
    elif name == "msort":
        d = 0
    else:
        d = arg(args, kwargs, 1, "dim")
    if d is None or not isinstance(d, int):
        tr.block(tg.ids, f"op '{name}' without an explicit dimension")
        return
    if _norm_dim(d, x.ndim) == tg.dim:
        tr.block(tg.ids, f"op '{name}' mixes channels (it acts along the channel dimension)")
        return
    _set_all(tr, out, tg, x.shape if name not in ("topk", "kthvalue") else None)


# -- cat / stack / chunk / split -----------------------------------------------------------------
@rule("cat", "concat", "concatenate")
def cat(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    ts = list(args[0] if args else kwargs.get("tensors"))
    dim = arg(args, kwargs, 1, "dim", 0)
    tags = [tr.tag(t) for t in ts]
    live = [(t, g) for t, g in zip(ts, tags) if g is not None]
    if not live:
        return
    nd = out.ndim
    dims = {g.dim for _, g in live}
    if len(dims) > 1:
        tr.block_tensors(ts, f"op '{name}' joins tensors whose channels lie on different dimensions")
        return
    d = dims.pop()
    dim = _norm_dim(dim, nd)
    if dim == d:
        parts = []
        for t, g in zip(ts, tags):
            if t.ndim != nd:
                continue  # legacy empty tensors
            if g is not None:
                parts.append(g.ids)
            else:
                parts.append(tr.fresh(t.shape[d], blocked=f"channels made in forward (a constant or the model input) are concatenated{tr.where()}"))
        tr.set_tag(out, Tag(d, np.concatenate(parts)))
        return
    ids = live[0][1].ids
    for t, g in live[1:]:
        tr.uf.union_arrays(ids, g.ids)
    for t, g in zip(ts, tags):
        if g is None and t.ndim == nd and t.shape[d] != 1:
            tr.block(ids, f"op '{name}' joins tracked channels with a tensor made in forward")
    tr.set_tag(out, Tag(d, ids))


@rule("stack", "hstack", "vstack", "dstack")
def stack(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    ts = list(args[0] if args else kwargs.get("tensors"))
    live = [(t, tr.tag(t)) for t in ts if tr.tag(t) is not None]
    if not live:
        return
    if name != "stack" or len({g.dim for _, g in live}) > 1 or len(live) != len(ts):
        tr.block_tensors(ts, f"op '{name}' stacks tensors with tracked channels")
        return
    d = live[0][1].dim
    dim = _norm_dim(arg(args, kwargs, 1, "dim", 0), out.ndim)
    ids = live[0][1].ids
    for _, g in live[1:]:
        tr.uf.union_arrays(ids, g.ids)
    tr.set_tag(out, Tag(d + 1 if dim <= d else d, ids))


def _pieces(tr: Tracer, name: str, x: torch.Tensor, tg: Tag, outs: list[torch.Tensor], d: int) -> None:
    """Pieces along dimension `d` of a tensor whose channels lie on `tg.dim`."""
    if d != tg.dim:
        for t in outs:
            tr.set_tag(t, tg)
        return
    C = x.shape[d]
    n = len(outs)
    sizes = {t.shape[d] for t in outs}
    if n == 1:
        tr.set_tag(outs[0], tg)
        return
    if len(sizes) != 1 or sizes.pop() * n != C:
        tr.block(tg.ids, f"op '{name}' cuts the channels into unequal pieces (fixed sizes break after pruning)")
        return
    s = C // n
    for p in range(s):  # equal pieces stay equal only if each loses the same positions
        for k in range(1, n):
            tr.uf.union(int(tg.ids[p]), int(tg.ids[k * s + p]))
    for k, t in enumerate(outs):
        tr.set_tag(t, Tag(d, tg.ids[k * s:(k + 1) * s]))


@rule("chunk", "tensor_split")
def chunk(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    n = arg(args, kwargs, 1, "chunks" if name == "chunk" else "sections")
    d = _norm_dim(arg(args, kwargs, 2, "dim", 0), x.ndim)
    outs = flat_tensors(out)
    if name == "tensor_split" and not isinstance(n, int) and d == tg.dim:
        tr.block(tg.ids, "op 'tensor_split' cuts the channels at fixed positions")
        return
    if d == tg.dim and isinstance(n, int) and len(outs) != n:
        tr.block(tg.ids, f"op '{name}' returns {len(outs)} pieces for {n} chunks (channel count not divisible)")
        return
    _pieces(tr, name, x, tg, outs, d)


@rule("split", "split_with_sizes", "hsplit", "vsplit", "dsplit")
def split(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    if name != "split" and name != "split_with_sizes":
        tr.block(tg.ids, f"op '{name}' is not understood")
        return
    d = _norm_dim(arg(args, kwargs, 2, "dim", 0), x.ndim)
    outs = flat_tensors(out)
    if d == tg.dim and len(outs) > 1:
        tr.block(tg.ids, f"op '{name}' cuts the channels into pieces of fixed size (they would not match after pruning; use chunk)")
        return
    _pieces(tr, name, x, tg, outs, d)


@rule("unbind")
def unbind(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    d = _norm_dim(arg(args, kwargs, 1, "dim", 0), x.ndim)
    if d == tg.dim:
        tr.block(tg.ids, "op 'unbind' takes the channels apart one by one")
        return
    for t in flat_tensors(out):
        tr.set_tag(t, Tag(tg.dim - (1 if d < tg.dim else 0), tg.ids))


@rule("glu")
def glu(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, tg = _input(tr, args, kwargs)
    if tg is None:
        return
    d = _norm_dim(arg(args, kwargs, 1, "dim", -1), x.ndim)
    if d != tg.dim:
        tr.set_tag(out, tg)
        return
    h = x.shape[d] // 2
    tr.uf.union_arrays(tg.ids[:h], tg.ids[h:])
    tr.set_tag(out, Tag(d, tg.ids[:h]))


@rule("__setitem__")
def setitem(tr: Tracer, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    x, idx, value = args[0], args[1], args[2]
    tx, tv = tr.tag(x), tr.tag(value)
    if tx is None:
        if tv is not None:
            tr.block(tv.ids, "tracked channels are written into a tensor made in forward")
        return
    C = x.shape[tx.dim]
    try:
        r = _channel_map(x, tx.dim)[idx]
        D, v, why = _analyse(r, C)
    except Exception:
        D, v, why = None, None, "could not be analysed"
    full = why is None and D is not None and not isinstance(D, Split) and len(v) == C and np.array_equal(v, np.arange(C))
    if not full:
        tr.block(tx.ids, f"op '__setitem__' writes to channels at fixed positions")
        if tv is not None:
            tr.block(tv.ids, "op '__setitem__' writes these channels at fixed positions")
        return
    if tv is not None:
        vd = r.ndim - (value.ndim - tv.dim)
        if vd == D and len(tv.ids) == C:
            tr.uf.union_arrays(tx.ids, tv.ids)
        elif len(tv.ids) != 1:
            tr.block(tx.ids, "op '__setitem__' writes channels of a differently shaped tensor")
            tr.block(tv.ids, "op '__setitem__' writes channels of a differently shaped tensor")
    elif isinstance(value, torch.Tensor) and value.ndim >= r.ndim - D and value.shape[value.ndim - (r.ndim - D)] not in (1,):
        tr.block(tx.ids, "op '__setitem__' writes a constant with per-channel values")


