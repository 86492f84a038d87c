"""One measurement in a fresh process (so ru_maxrss is this run's peak): python
benchmarks/collect_probe.py MODE BATCHES [SIZE] -> JSON {seconds, peak_rss_mib}.

MODE: plain (forward passes), collect (fastprune.collect with covariance + influence),
naive (forward hooks keep every conv input, then torch.cov and scikit-learn PCA per group),
breakdown (where collect's extra time goes: one batch's hook inputs are kept, then the forward
and a replay of collect's hooks on them are each timed, best of BATCHES repeats, with the
compiled kernels' share of the replay; with FASTPRUNE_BENCH_THREADS=1 it reads thread CPU time,
which other processes' load barely moves, so it can be compared across runs on a busy machine).
"""
from __future__ import annotations

import json
import resource
import sys
import time

import torch
from torch import nn


class _Double(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LocalUNet(nn.Module):
    """Plain U-Net (used only while fastprune.models.UNet is not available)."""

    def __init__(self, base_width: int = 32, depth: int = 4, classes: int = 2) -> None:
        super().__init__()
        w = [base_width * 2**i for i in range(depth + 1)]
        self.inc = _Double(3, w[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), _Double(w[i], w[i + 1])) for i in range(depth))
        self.upconv = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(depth)))
        self.updouble = nn.ModuleList(_Double(2 * w[i], w[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(w[0], classes, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for d in self.downs:
            skips.append(d(skips[-1]))
        y = skips.pop()
        for up, dbl in zip(self.upconv, self.updouble):
            y = dbl(torch.cat([skips.pop(), up(y)], dim=1))
        return self.outc(y)


def unet() -> nn.Module:
    torch.manual_seed(0)
    try:
        from fastprune.models import UNet
        return UNet(in_channels=3, num_classes=2, base_width=32, depth=4).eval()
    except ImportError:
        return LocalUNet().eval()


class data:
    """`batches` random 1x3xSIZExSIZE images made on the fly (a data loader's behaviour: the
    data set is not held in memory, so peak memory measures the pass, not the inputs)."""

    def __init__(self, batches: int, size: int) -> None:
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(self.batches):
            yield torch.rand(1, 3, self.size, self.size, generator=g)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i != 0:
            raise IndexError("only the first batch is addressable (the example input)")
        return next(iter(self))


def breakdown(repeats: int, size: int) -> dict:
    """Forward vs collect's hooks replayed on one batch's kept inputs (best of `repeats`), ms."""
    from fastprune._ext import _C
    from fastprune.graph import DependencyGraph
    from fastprune.stats import collect as col, influence, moments
    model = unet()
    x = data(1, size)[0]
    stats = col._new_statistics(model, DependencyGraph(model, x), x, True, True, False, None, 0, False)
    collector = col._Collector(model, stats, None, False)
    collector.close()  # its hooks are replayed by hand below
    kept: list = []
    handles = [collector.modules[n].register_forward_pre_hook(lambda m, a, n=n: kept.append((n, a[0].clone())))
               for n in collector.tasks]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    calls = [(collector._hook(n), collector.modules[n], a) for n, a in kept]
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    in_kernels = {"moments_update": 0.0, "influence_shift": 0.0}

    class Timed:  # the compiled module, with its two per-batch kernels timed
        def __getattr__(self, name):
            fn = getattr(_C, name)
            if name not in in_kernels:
                return fn

            def timed(*args):
                t = clock()
                try:
                    return fn(*args)
                finally:
                    in_kernels[name] += clock() - t
            return timed

    def forward():
        with torch.no_grad():
            model(x)

    def replay():
        for hook, module, a in calls:
            hook(module, (a,))

    def best(fn):
        runs = []
        for _ in range(repeats):
            for k in in_kernels:
                in_kernels[k] = 0.0
            t = clock()
            fn()
            runs.append((clock() - t, dict(in_kernels)))
        return min(runs, key=lambda r: r[0])

    fwd, _ = best(forward)
    moments._C, influence._C = Timed(), Timed()
    try:
        hooks, ker = best(replay)
    finally:
        moments._C, influence._C = _C, _C
    ms = {k: round(v * 1e3, 2) for k, v in ker.items()}
    return {"mode": "breakdown", "threads": torch.get_num_threads(), "clock": clock.__name__,
            "forward_ms": round(fwd * 1e3, 1), "hooks_ms": round(hooks * 1e3, 1), "kernels_ms": ms,
            "rest_ms": round((hooks - sum(ker.values())) * 1e3, 2), "hooks_per_forward": round(hooks / fwd, 4)}


def run(mode: str, batches: int, size: int) -> dict:
    import fastprune
    if mode == "breakdown":
        return breakdown(batches, size)
    model = unet()
    xs = data(batches, size)
    ex = xs[0]
    if mode == "collect":
        from fastprune.graph import DependencyGraph
        graph = DependencyGraph(model, ex)  # built before the clock starts, as plain has no graph
    t0 = time.perf_counter()
    if mode == "plain":
        with torch.no_grad():
            for x in xs:
                model(x)
    elif mode == "collect":
        fastprune.collect(model, xs, example_inputs=ex, covariance=True, influence=True, graph=graph, progress=False)
    elif mode == "naive":
        import numpy as np
        from sklearn.decomposition import PCA
        kept: dict[str, list[torch.Tensor]] = {}
        hooks = [m.register_forward_pre_hook(lambda m, a, n=n: kept.setdefault(n, []).append(a[0].detach().clone()))
                 for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for x in xs:
                model(x)
        for h in hooks:
            h.remove()
        for n, parts in kept.items():
            a = torch.cat(parts).transpose(0, 1).reshape(parts[0].shape[1], -1)  # (C, pixels)
            torch.cov(a)
            PCA().fit(a.T.numpy().astype(np.float64))
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "batches": batches, "size": size, "seconds": seconds, "peak_rss_mib": peak}


if __name__ == "__main__":
    mode, batches = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    torch.set_num_threads(int(__import__("os").environ.get("FASTPRUNE_BENCH_THREADS", torch.get_num_threads())))
    print(json.dumps(run(mode, batches, size)))
