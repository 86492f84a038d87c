"""Cost of the learned importance weights, as ratios against the same model without them.

- gate training step (forward + backward, base frozen) vs the plain step;
- one masked validation pass of the tolerance loop (gates + surgery's masking hooks) vs a plain
  eval pass;
- folding the gates (no extra op remains): folded eval pass vs the plain pass (should be ~1).
"""
import copy
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("fastprune.graph", reason="needs the dependency graph")
pytest.importorskip("fastprune.surgery", reason="needs the surgery layer")

import fastprune  # noqa: E402
from fastprune.surgery import masked  # noqa: E402
from fastprune.train.gates import Gates  # noqa: E402


def _net() -> nn.Module:
    def cbr(a, b):
        return [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*cbr(3, 32), *cbr(32, 32), nn.MaxPool2d(2), *cbr(32, 64), *cbr(64, 64),
                         nn.Upsample(scale_factor=2.0), *cbr(64, 32), nn.Conv2d(32, 2, 1)).eval()


def _ratio(base, other, repeat: int = 9, number: int = 2) -> float:
    """min time of `other` / min time of `base`, timed alternately so that load drifts hit both."""
    base(), other()
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for k, fn in enumerate((base, other)):
            t = time.perf_counter()
            for _ in range(number):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t) / number)
    return best[1] / best[0]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = _net()
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 2, (4, 32, 32))
    graph = fastprune.DependencyGraph(model, x)
    return model, x, y, graph


def _step(model, params, x, y):
    for p in params:
        p.grad = None
    F.cross_entropy(model(x), y).backward()


def _eval(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def test_bench_gate_training_step(benchmark, setup):
    model, x, y, _ = setup
    plain, work = copy.deepcopy(model), copy.deepcopy(model)  # same weights; only `work` carries gates
    for p in list(plain.parameters()) + list(work.parameters()):
        p.requires_grad_(False)
    x = x.clone().requires_grad_(True)  # the plain step also back-propagates through every layer
    gates = Gates(work, fastprune.DependencyGraph(work, x.detach()).groups, x.detach())
    params = list(gates.parameters())
    ratio = _ratio(lambda: _step(plain, [], x, y), lambda: _step(work, params, x, y))
    benchmark.pedantic(_step, args=(work, params, x, y), rounds=3, iterations=2, warmup_rounds=1)
    benchmark.extra_info["ratio_vs_plain"] = round(ratio, 3)
    print(f"\ngate training step / plain step: {ratio:.3f}")


def test_bench_masked_validation_pass(benchmark, setup):
    model, x, y, _ = setup
    work = copy.deepcopy(model)
    graph = fastprune.DependencyGraph(work, x)
    gates = Gates(work, graph.groups, x)
    gates.set_removed({slot: list(range(0, len(w) // 2)) for slot, w in enumerate(gates.weights)})
    t = time.perf_counter()
    handle = masked(work, gates.removal(), x, graph=graph)  # installed once per candidate
    install = time.perf_counter() - t
    try:
        ratio = _ratio(lambda: _eval(model, x, y), lambda: _eval(work, x, y))
        benchmark.pedantic(_eval, args=(work, x, y), rounds=3, iterations=2, warmup_rounds=1)
    finally:
        handle.remove()
    benchmark.extra_info["ratio_vs_plain"] = round(ratio, 3)
    benchmark.extra_info["mask_install_s"] = round(install, 4)
    print(f"\nmasked gated validation pass / plain pass: {ratio:.3f} (installing the masks: {install * 1e3:.1f} ms)")


def test_bench_folded_pass(benchmark, setup):
    model, x, y, graph = setup
    work = copy.deepcopy(model)
    gates = Gates(work, graph.groups, x, init="uniform")
    gates.fold()
    ratio = _ratio(lambda: _eval(model, x, y), lambda: _eval(work, x, y))
    benchmark.pedantic(_eval, args=(work, x, y), rounds=3, iterations=2, warmup_rounds=1)
    benchmark.extra_info["ratio_vs_plain"] = round(ratio, 3)
    print(f"\nfolded pass / plain pass: {ratio:.3f}")
