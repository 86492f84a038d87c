"""Graph + prune of a ResNet-50-sized network (25.6M parameters, 224x224 input) on CPU.

Baseline timed in the same run: one plain forward pass of the same model (the tracer has to
run the forward once, so graph+prune can never be cheaper than that). Target: < 2 s.
"""
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fastprune.graph import DependencyGraph  # noqa: E402
from fastprune.surgery import prune  # noqa: E402
from zoo import resnet50_like  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: one thread is the stable (and faster) setting
    torch.manual_seed(0)
    model = resnet50_like().eval()
    x = torch.randn(1, 3, 224, 224)
    g = DependencyGraph(model, x)
    removal = {}
    for grp in g.groups:
        if grp.prunable and not grp.touches_output:
            p = grp.producers[0]
            removal[p.module] = [p.indices[c] for c in range(0, grp.channels, 2)]
    yield model, x, removal
    torch.set_num_threads(n)


def _forward_seconds(model, x, rounds=3):
    ts = []
    with torch.no_grad():
        for _ in range(rounds):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
    return min(ts)


def test_bench_graph_and_prune_resnet50(benchmark, setup):
    model, x, removal = setup
    base = _forward_seconds(model, x)

    def run():
        g = DependencyGraph(model, x)
        return prune(model, removal, x, graph=g)

    pruned = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    sec = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "params": sum(p.numel() for p in model.parameters()),
        "params_pruned": sum(p.numel() for p in pruned.parameters()),
        "forward_s": base, "graph_prune_s": sec, "ratio_to_forward": sec / base,
    })
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_bench_graph_only_resnet50(benchmark, setup):
    model, x, _ = setup
    base = _forward_seconds(model, x)
    benchmark.pedantic(lambda: DependencyGraph(model, x), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update({"forward_s": base, "ratio_to_forward": benchmark.stats.stats.min / base})
