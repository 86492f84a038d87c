"""End to end: CPU latency of a U-Net (base width 32, depth 4, 512x512 tile) before and after
removing half the channels of every layer (l1 ratio plan, physical surgery), timed in the same
run; the ratio is what pruning buys on this machine, next to the MAC ratio it promises.
Figures: benchmarks/README.md ("Pruned model latency")."""
from __future__ import annotations

import pytest
import torch

for _dep in ("fastprune.models", "fastprune.graph", "fastprune.surgery"):
    pytest.importorskip(_dep)

SIZE = 512


@pytest.fixture(scope="module")
def models():
    import fastprune
    from fastprune.models import create

    torch.manual_seed(0)
    base = create("unet", base_width=32, depth=4, upsample="bilinear").eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    convs = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d)][:-1]  # not the classifier
    removal = {}
    for n in convs:
        w = dict(base.named_modules())[n].weight.detach()
        order = torch.argsort(w.abs().sum(dim=(1, 2, 3)))
        removal[n] = order[: w.shape[0] // 2].tolist()
    pruned = fastprune.prune(base, removal, x).eval()
    return base, pruned, x, fastprune.count(base, x), fastprune.count(pruned, x)


def _run(benchmark, model, x, cost, group):
    benchmark.group = group
    with torch.inference_mode():
        model(x)
        benchmark.pedantic(model, args=(x,), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(macs=cost.macs, params=cost.params, flops=2 * cost.macs,
                                threads=torch.get_num_threads())


def test_bench_unet_latency_baseline(benchmark, models):
    base, _, x, cost, _ = models
    _run(benchmark, base, x, cost, "pruned-unet-latency")


def test_bench_unet_latency_pruned_half(benchmark, models):
    _, pruned, x, _, cost = models
    _run(benchmark, pruned, x, cost, "pruned-unet-latency")
