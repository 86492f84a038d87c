"""How channels flow through each torch op (the rules the tracer applies).

Every rule receives the tracer, the call and its result, reads the input tags and sets the
output tags. Anything not covered here blocks the channels that reach it, with its name.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .trace import Tag, Tracer, flat_tensors, op_name

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

def _input(tr: Tracer, args: tuple, kwargs: dict) -> tuple[Any, Tag | None]:
    """The op's input tensor (first positional argument or `input=`) and its channel tag."""
    x = args[0] if args else kwargs.get("input")
    return x, tr.tag(x)



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
    from .trace import ModuleCall

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
