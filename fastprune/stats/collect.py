"""`collect`: one streaming pass of a model over data that fills a `Statistics`.

Forward pre-hooks on the consuming modules of every prunable channel group see exactly the
tensors those consumers read (after normalisation and activation) and feed the group's
accumulators; nothing is stored, so memory does not grow with the data. Runs in eval mode
under `torch.no_grad()` (unless a `loss` asks for Taylor gradients) on the model's device.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from .._documents import weights_digest
from .moments import NonFiniteInput
from .statistics import GroupInfo, Statistics

_CONV_KINDS = ("conv", "depthwise")
_FEATURE_KINDS = ("conv", "depthwise", "conv_transpose", "linear")


def _member_dict(m: Any) -> dict[str, Any]:
    return {"module": str(m.module), "kind": str(m.kind), "dim": str(m.dim), "indices": [int(i) for i in m.indices]}


def _geometry(module: torch.nn.Module) -> dict[str, Any] | None:
    """(kernel, stride, padding, dilation, groups) of a 2-D convolution consumer, else None."""
    if not isinstance(module, torch.nn.Conv2d):
        return None
    pad = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # 'same' with stride 1: symmetric only for odd effective kernels
            eff = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
            if any(e % 2 for e in eff):
                return None
            pad = tuple(e // 2 for e in eff)
    if module.padding_mode != "zeros":
        return None
    return {"kernel_size": list(module.kernel_size), "stride": list(module.stride), "padding": list(pad),
            "dilation": list(module.dilation), "groups": int(module.groups)}


def _default_inputs(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch:
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "input", "inputs", "x"):
            if key in batch:
                return batch[key]
        return next(iter(batch.values()))
    raise TypeError(f"fastprune: cannot find the model input in a batch of type {type(batch).__name__}; pass inputs=")


# collect traces the graph on a 64 x 64 window of the example (DependencyGraph trace_size): the
# groups are those of the whole example, for a fraction of a forward pass
_TRACE_SIZE = 64


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _first_example(x: Any) -> Any:
    """One sample of a batch, as the graph's example input."""
    if isinstance(x, torch.Tensor):
        return x[:1]
    if isinstance(x, (list, tuple)):
        return type(x)(_first_example(v) for v in x)
    return x


def _tensor_spec(x: Any) -> dict[str, Any] | None:
    if isinstance(x, torch.Tensor):
        return {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
    return None


def _describe(graph: Any) -> dict[str, GroupInfo]:
    infos = {}
    for g in graph.groups:
        consumers = [_member_dict(m) for m in g.consumers]
        primary = next((c["module"] for c in consumers if c["kind"] in _FEATURE_KINDS), None)
        infos[str(g.id)] = GroupInfo(
            id=str(g.id), channels=int(g.channels),
            producers=[_member_dict(m) for m in g.producers], consumers=consumers,
            members=[_member_dict(m) for m in g.members], primary=primary,
            prunable=bool(g.prunable), touches_output=bool(g.touches_output))
    return infos


class NonFiniteActivations(ValueError):
    """A layer's input held NaN/Inf, or finite values too large for the statistics: names the
    layer, the batch and what was saved."""


class _Tiling:
    """Overlapping crops of a large input; hooks keep only each crop's core (no overlap),
    so every feature-map pixel is counted once and peak memory is one crop's."""

    def __init__(self, tile: int, overlap: int) -> None:
        if tile <= 2 * overlap or overlap < 0:
            raise ValueError(f"fastprune: tile ({tile}) must exceed twice the overlap ({overlap})")
        self.tile, self.overlap = int(tile), int(overlap)
        self.core: tuple[int, int, int, int, int, int] | None = None  # rows/cols of core within crop, crop h/w

    def crops(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        step = self.tile - 2 * self.overlap
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            for c0 in range(0, w, step):
                c1 = min(w, c0 + step)
                R0, R1 = max(0, r0 - self.overlap), min(h, r1 + self.overlap)
                C0, C1 = max(0, c0 - self.overlap), min(w, c1 + self.overlap)
                self.core = (r0 - R0, r1 - R0, c0 - C0, c1 - C0, R1 - R0, C1 - C0)
                yield x[..., R0:R1, C0:C1]
        self.core = None

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        if self.core is None or x.dim() < 3:
            return x
        a, b, c, d, hh, ww = self.core
        sh, sw = x.shape[-2] / hh, x.shape[-1] / ww
        return x[..., round(a * sh):round(b * sh), round(c * sw):round(d * sw)]


class _Collector:
    """Owns the hooks and feeds one `Statistics`."""

    def __init__(self, model: torch.nn.Module, stats: Statistics, tiling: _Tiling | None, taylor: bool,
                 checkpoint: str | Path | None = None) -> None:
        self.stats, self.tiling, self.taylor, self.checkpoint = stats, tiling, taylor, checkpoint
        self.modules = dict(model.named_modules())
        self.tasks: dict[str, list[tuple[str, str, Any]]] = {}
        for gid, g in stats.groups.items():
            for c in g.consumers:
                idx = c["indices"]
                mod = self.modules[c["module"]]
                full = _in_channels(mod)
                if full is not None and idx == list(range(full)):
                    sel = None
                elif idx == list(range(idx[0], idx[0] + len(idx))):
                    sel = (idx[0], len(idx))  # a contiguous block (a concatenation's part): a view
                else:
                    sel = torch.tensor(idx, dtype=torch.long)
                self.tasks.setdefault(c["module"], []).append((gid, c["module"], sel))
        self.handles = [self.modules[name].register_forward_pre_hook(self._hook(name)) for name in self.tasks]

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def _nonfinite(self, name: str, overflow: bool = False) -> NonFiniteActivations:
        groups = sorted({t[0] for t in self.tasks[name]})
        producers = [p["module"] for gid in groups for p in self.stats.groups[gid].producers]
        what = ("finite activations too large for the statistics' sums of squares (overflow)" if overflow
                else "non-finite activations (NaN/inf)")
        kept = (f"; the statistics of the batches before it are in {self.checkpoint}"
                if self.checkpoint is not None and Path(self.checkpoint).exists() else "; nothing was saved")
        return NonFiniteActivations(
            f"fastprune: {what} entering layer '{name}' "
            f"(output of {', '.join(producers) or 'the input'}) in batch {self.stats.meta.get('batches', 0) + 1}{kept}")

    def _hook(self, name: str) -> Callable:
        # the moments kernel finds NaN/inf in the same pass (and raises, state unchanged); a
        # consumer that feeds no moments is checked here with one reduction
        checked = any(self.stats.groups[gid].primary == cname and gid in self.stats.moments
                      for gid, cname, _ in self.tasks[name])
        # resolved once, not per batch: (selection, moments or None, accumulators fed after it)
        plan = []
        for gid, cname, sel in sorted(self.tasks[name], key=lambda t: self.stats.groups[t[0]].primary != t[1]):
            mom = self.stats.moments.get(gid) if self.stats.groups[gid].primary == cname else None
            after = [acc for acc in (self.stats.influence.get(gid, {}).get(cname),
                                     self.stats.patch_gram.get(gid, {}).get(cname)) if acc is not None]
            plan.append((gid, sel, mom, after))
        tiling, taylor = self.tiling, self.taylor

        def hook(module: torch.nn.Module, args: tuple) -> None:
            x = args[0]
            if not isinstance(x, torch.Tensor):
                return
            if not checked and not torch.isfinite(x.detach().sum()) and not torch.isfinite(x).all():
                raise self._nonfinite(name)
            if tiling is not None:
                x = tiling.cut(x)
            xdet = x.detach()
            for gid, sel, mom, after in plan:  # moments first
                xd = _select(xdet, sel)
                if mom is not None:
                    try:
                        mom.update(xd)
                    except NonFiniteInput as exc:
                        raise self._nonfinite(name, exc.overflow) from exc
                    if taylor and x.requires_grad:
                        x.register_hook(self._taylor_hook(gid, xd, sel))
                for acc in after:
                    acc.update(xd)
        return hook

    def _taylor_hook(self, gid: str, act: torch.Tensor, sel: Any) -> Callable:
        def on_grad(grad: torch.Tensor) -> None:
            # first-order Taylor (Molchanov et al. 2017): |mean over positions of a*g| per image
            g = _select(grad.detach(), sel)
            dims = tuple(range(2, act.dim()))
            t = (act * g).mean(dim=dims) if dims else act * g
            self.stats.taylor[gid] += t.abs().sum(0).to(torch.float64).cpu()
            self.stats.taylor_count[gid] += int(act.shape[0])
        return on_grad


def _select(x: torch.Tensor, sel: Any) -> torch.Tensor:
    """The group's channels of a consumer's input: all, a contiguous block (view), or gathered."""
    if sel is None:
        return x
    if isinstance(sel, tuple):
        return x.narrow(1, sel[0], sel[1])
    return x.index_select(1, sel.to(x.device))


def _in_channels(mod: torch.nn.Module) -> int | None:
    for attr in ("in_channels", "in_features", "num_features"):
        if hasattr(mod, attr):
            return int(getattr(mod, attr))
    return None


def _new_statistics(model: torch.nn.Module, graph: Any, example: Any, covariance: bool, influence: bool,
                    patch_gram: bool, sample: int | None, seed: int, taylor: bool) -> Statistics:
    from .influence import InfluenceMoments, PatchGram
    from .moments import ChannelMoments

    infos = {gid: g for gid, g in _describe(graph).items() if g.prunable and g.primary is not None}
    modules = dict(model.named_modules())
    stats = Statistics(fingerprint=graph.fingerprint(), groups=infos,
                       meta={"batches": 0, "samples": 0, "covariance": covariance, "influence": influence,
                             "patch_gram": patch_gram, "sample": sample, "example_input": _tensor_spec(example)})
    for gid, g in infos.items():
        stats.moments[gid] = ChannelMoments(g.channels, covariance=covariance)
        for c in g.consumers:
            geo = _geometry(modules[c["module"]])
            if geo is None:
                continue
            c["geometry"] = geo
            kw = {k: tuple(geo[k]) for k in ("kernel_size", "stride", "padding", "dilation")}
            if influence and c["kind"] in _CONV_KINDS:
                stats.influence.setdefault(gid, {})[c["module"]] = InfluenceMoments(g.channels, **kw)
            if patch_gram and c["kind"] == "conv" and geo["groups"] == 1:
                stats.patch_gram.setdefault(gid, {})[c["module"]] = PatchGram(
                    g.channels, **kw, sample=sample, seed=seed)
        if taylor:
            stats.taylor[gid] = torch.zeros(g.channels, dtype=torch.float64)
            stats.taylor_count[gid] = 0
    return stats


def collect(
    model: torch.nn.Module,
    data: Iterable[Any],
    example_inputs: Any = None,
    covariance: bool = True,
    influence: bool = True,
    max_batches: int | None = None,
    patch_gram: bool = False,
    sample: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    tile: int | None = None,
    overlap: int = 32,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    inputs: Callable[[Any], Any] | None = None,
    graph: Any = None,
    seed: int = 0,
    progress: bool = True,
    resume_key: dict[str, Any] | None = None,
) -> Statistics:
    """Run `model` over `data` and return the statistics of every prunable channel group.

    data: iterable of batches (a tensor, a (input, target, ...) tuple, or a dict with 'image');
    `inputs(batch)` overrides how the model input is found. Batches are moved to the model's
    device. `max_batches` stops early. `patch_gram=True` adds the (optionally position-
    subsampled: `sample` positions per batch) patch Gram that `lasso` needs.
    `checkpoint`: a file the statistics are saved to every `checkpoint_every` batches; if it
    exists when collect starts, collection resumes after the batches it already holds (the
    data must come in the same order); a checkpoint is marked incomplete (`stats.complete`,
    refused by `plan`) until the pass ends, and resuming it on other weights, with another
    batch size, other options or another `resume_key` (the caller's name for the data, e.g.
    its SPEC) is refused. `tile`: run on overlapping `tile`x`tile` crops (with
    `overlap` pixels of context on each side; keep both multiples of the model's total stride)
    and count each crop's core only, so peak memory is one crop's. `loss(output, batch)`:
    opt-in backward pass per batch for the first-order Taylor criterion (`taylor`).
    """
    if max_batches is not None and max_batches < 0:
        raise ValueError(f"fastprune: max_batches must be >= 0, got {max_batches}")
    if checkpoint_every < 1:
        raise ValueError(f"fastprune: checkpoint_every must be >= 1, got {checkpoint_every}")
    get_input = inputs or _default_inputs
    params = list(model.parameters()) + list(model.buffers())
    device = params[0].device if params else torch.device("cpu")
    tiling = _Tiling(tile, overlap) if tile else None
    if tiling is not None and loss is not None:
        raise ValueError("fastprune: tile= and loss= (Taylor gradients) cannot be combined: the loss needs whole images")

    it = iter(data)
    first = None
    if example_inputs is None:
        try:
            first = next(it)
        except StopIteration:
            raise ValueError("fastprune: collect got no data (the iterable is empty)") from None
        example_inputs = _first_example(get_input(first))
        if tiling is not None and isinstance(example_inputs, torch.Tensor):
            example_inputs = next(tiling.crops(example_inputs))
            tiling.core = None
    example_inputs = _to(example_inputs, device)

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        if graph is None:
            from fastprune.graph import DependencyGraph
            with torch.no_grad():
                graph = DependencyGraph(model, example_inputs, trace_size=_TRACE_SIZE)
        stats = None
        done = 0
        run = {"covariance": covariance, "influence": influence, "patch_gram": patch_gram, "sample": sample,
               "seed": seed, "tile": tile, "overlap": overlap if tile else None, "taylor": loss is not None,
               **(resume_key or {})}
        digest = weights_digest(model)
        if checkpoint is not None and Path(checkpoint).exists():
            stats = Statistics.load(checkpoint)
            _check_resumable(stats, checkpoint, graph.fingerprint(), digest, run)
            done = int(stats.meta.get("batches", 0))
        if stats is None:
            stats = _new_statistics(model, graph, example_inputs, covariance, influence, patch_gram,
                                    sample, seed, loss is not None)
            stats.meta.update(run=run, weights_digest=digest)
        collector = _Collector(model, stats, tiling, loss is not None, checkpoint)
        total = None
        if hasattr(data, "__len__"):
            total = len(data)  # type: ignore[arg-type]
        if max_batches is not None:
            total = max_batches if total is None else min(total, max_batches)

        def batches():
            if first is not None:
                yield first
            yield from it

        disable = True if (not progress or os.environ.get("TQDM_DISABLE")) else None
        try:
            with tqdm(total=total, initial=min(done, total or done), desc="collect", unit="batch", disable=disable) as bar:
                for i, batch in enumerate(batches()):
                    if max_batches is not None and i >= max_batches:
                        break
                    if i == 0:
                        _check_batch_size(stats, checkpoint, get_input(batch))
                    if i < done:
                        continue  # already in the checkpoint
                    x = _to(get_input(batch), device)
                    _run(model, x, batch, tiling, loss, device)
                    stats.meta["batches"] = i + 1
                    if isinstance(x, torch.Tensor):
                        stats.meta["samples"] = int(stats.meta.get("samples", 0)) + int(x.shape[0])
                    bar.update(1)
                    if checkpoint is not None and (i + 1) % checkpoint_every == 0:
                        stats.meta["complete"] = False
                        stats.save(checkpoint)
        finally:
            collector.close()
        bad = stats.nonfinite()
        if bad:
            gid, layer = bad[0]
            producers = ", ".join(p["module"] for p in stats.groups[gid].producers) or "the input"
            raise NonFiniteActivations(
                f"fastprune: the statistics of the activations entering layer '{layer}' (output of {producers}) "
                "overflowed: finite activations too large for their sums of squares; nothing more was saved")
        stats.meta["complete"] = True
        if checkpoint is not None:
            stats.save(checkpoint)
        return stats
    finally:
        for m, mode in modes.items():
            m.training = mode


def _check_resumable(stats: Statistics, checkpoint: Any, fingerprint: str, digest: str, run: dict) -> None:
    """ValueError unless checkpoint `stats` continue this collection: same model, weights, options."""
    if stats.fingerprint != fingerprint:
        raise ValueError(f"fastprune: checkpoint {checkpoint} holds statistics of a different model")
    if stats.meta.get("weights_digest") != digest:
        raise ValueError(f"fastprune: checkpoint {checkpoint} was collected on other weights of this model")
    had = stats.meta.get("run") or {}
    differ = sorted(k for k in set(had) | set(run) if k != "batch_size" and had.get(k) != run.get(k))
    if differ:
        shown = ", ".join(f"{k}={had.get(k)!r} there, {run.get(k)!r} now" for k in differ)
        raise ValueError(f"fastprune: checkpoint {checkpoint} was collected with other options ({shown}): "
                         "resume with the same ones, or start afresh")


def _check_batch_size(stats: Statistics, checkpoint: Any, x: Any) -> None:
    """Record the first batch's size; a resumed collection must see the same (its batches are
    counted, not its samples)."""
    size = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() else None
    run = stats.meta.setdefault("run", {})
    if run.get("batch_size") is None:
        run["batch_size"] = size
    elif run["batch_size"] != size:
        raise ValueError(f"fastprune: checkpoint {checkpoint} was collected in batches of {run['batch_size']}, "
                         f"this data comes in batches of {size}: resume with the same batch size")


def _run(model: torch.nn.Module, x: Any, batch: Any, tiling: _Tiling | None, loss: Callable | None,
         device: torch.device) -> None:
    pieces = tiling.crops(x) if tiling is not None and isinstance(x, torch.Tensor) else [x]
    for piece in pieces:
        if loss is None:
            with torch.no_grad():
                model(piece)
        else:
            with torch.enable_grad():
                model.zero_grad(set_to_none=True)
                out = model(piece)
                value = loss(out, _to(batch, device))
                value.backward()
            model.zero_grad(set_to_none=True)
