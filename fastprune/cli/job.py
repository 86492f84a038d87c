"""The demo job: synthetic aerial data -> train a small U-Net on the CPU -> statistics -> plan
(pca_nci, lfa) -> prune -> fine-tune -> evaluate -> CPU latency -> report -> closing table.

Every figure it prints is measured in this run; nothing is fixed in advance. The defaults are
chosen so the whole job fits in a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .._files import atomic_write
from ..workflows.pipeline import Pipeline
from .outputs import DEMO_MARKER, check_output


@dataclass
class DemoConfig:
    """What the demo runs. `methods` maps a method name to its planning rule options."""

    model: str = "unet:base_width=16,depth=3,upsample=bilinear"
    train: str = "synthetic:n=256,size=64,seed=0"
    val: str = "synthetic:n=32,size=64,seed=1"     # picks the training's best epoch (keep_best)
    test: str = "synthetic:n=64,size=64,seed=2"    # every reported metric
    epochs: int = 15
    lr: float = 3e-3
    batch_size: int = 8
    stats_batches: int = 8
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "pca_nci": {"variance": 0.99}, "lfa": {"factors": "variance", "variance": 0.99}})
    finetune_epochs: int = Pipeline.finetune_epochs   # the fine-tuning of compare and compress
    finetune_lr: float = Pipeline.lr
    distill: float = Pipeline.distill
    keep_best: str | None = "building_iou"             # the training's best validation epoch
    finetune_keep_best: str | None = Pipeline.keep_best  # None: the fine-tuning's last epoch
    keep_classifier_input: bool = True
    latency_size: int = 256
    latency_repeats: int = 10
    latency_warmup: int = 3
    threads: int | None = None
    samples: int = 3
    seed: int = 0


class _Clock:
    def __init__(self, log: Callable[[str], None]):
        self.t0 = time.perf_counter()
        self.phases: dict[str, float] = {}
        self.log = log

    def phase(self, name: str):
        clock = self

        class _P:
            def __enter__(self):
                self.t = time.perf_counter()
                clock.log(f"[{time.perf_counter() - clock.t0:6.1f}s] {name} ...")

            def __exit__(self, *exc):
                clock.phases[name] = round(time.perf_counter() - self.t, 2)

        return _P()

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def run_demo(out: str | Path, config: DemoConfig | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole job into `out` (model folders, stats.fps, plans, report/); return summary.json's content."""
    from torch.utils.data import DataLoader

    from .. import __version__
    from ..report import assemble, measure_latencies, render_report, summary
    from ..report.records import metrics_from_evaluation

    from ..graph.cost import count
    from ..planning import compose
    from ..planning import plan as make_plan
    from ..stats.collect import collect
    from ..surgery import prune
    from ..train import evaluate, fit
    from .artifacts import LoadedModel, save_model
    from .specs import build, open_data, parse_model_spec

    cfg = config or DemoConfig()
    out = check_output(None, out, "demo")  # before any work: new, empty or an earlier demo's folder
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / DEMO_MARKER, json.dumps({"format": "fastprune.demo", "fastprune": __version__}))
    clock = _Clock(log)
    torch.manual_seed(cfg.seed)
    threads = cfg.threads or torch.get_num_threads()

    spec = parse_model_spec(cfg.model)
    train, val, test = open_data(cfg.train), open_data(cfg.val), open_data(cfg.test)
    model = build(spec)
    example = torch.zeros(1, 3, cfg.latency_size, cfg.latency_size)

    with clock.phase(f"train {cfg.model} on {len(train)} tiles for {cfg.epochs} epochs"):
        history = fit(model, train, val, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                      keep_best=cfg.keep_best)
    save_model(out / "baseline", LoadedModel(model, spec))
    with clock.phase("evaluate the unpruned model"):
        metrics = {"baseline": metrics_from_evaluation(evaluate(model, test, batch_size=cfg.batch_size))}
    log(f"         unpruned: building IoU {100 * metrics['baseline']['iou']:.2f}%")

    with clock.phase("collect statistics (one streaming pass)"):
        loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=False)
        stats = collect(model, loader, max_batches=cfg.stats_batches)
        stats.meta["model"] = {"spec": cfg.model, "weights": "baseline/weights.safetensors",
                               "folder": "baseline"}  # relative to the statistics file's folder
        stats.meta["data"] = cfg.train
        stats.save(out / "stats.fps")

    before = count(model, example)
    teacher = copy.deepcopy(model).eval()  # fit may freeze a teacher's parameters; keep `model` trainable
    layers, pruned_models, plans, before_ft = {}, {}, {}, {}
    exclude = classifier_input(model) if cfg.keep_classifier_input else []
    for method, rule in cfg.methods.items():
        with clock.phase(f"{method}: plan {rule}, prune"):
            crit, rule_obj, bounds = compose(method, **{"exclude": exclude, **rule})
            plan = make_plan(model, stats, crit, rule_obj, bounds=bounds)
            (out / "plans").mkdir(exist_ok=True)
            plan.save(out / "plans" / f"{method}.json")
            pruned = prune(model, plan, example)
        after = count(pruned, example)
        log(f"         {method}: params {100 * (1 - after.params / before.params):.1f}% fewer, "
            f"MACs {100 * (1 - after.macs / before.macs):.1f}% fewer")
        before_ft[method] = metrics_from_evaluation(evaluate(pruned, test, batch_size=cfg.batch_size))
        with clock.phase(f"{method}: fine-tune {cfg.finetune_epochs} epochs (teacher: the unpruned model)"):
            fit(pruned, train, val, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, batch_size=cfg.batch_size,
                seed=cfg.seed, teacher=teacher if cfg.distill > 0 else None, distill=cfg.distill,
                keep_best=cfg.finetune_keep_best)
        metrics[method] = metrics_from_evaluation(evaluate(pruned, test, batch_size=cfg.batch_size))
        log(f"         {method}: building IoU {100 * before_ft[method]['iou']:.2f}% after pruning, "
            f"{100 * metrics[method]['iou']:.2f}% after fine-tuning")
        save_model(out / method, LoadedModel(pruned, spec, plan), metrics_before_finetune=before_ft[method],
                   metrics=metrics[method])
        layers[method] = assemble.layer_records(plan, before, after)
        pruned_models[method], plans[method] = pruned, plan

    models = {"baseline": model, **pruned_models}
    with clock.phase(f"CPU latency of {len(models)} models, interleaved ({threads} threads)"):
        lats = measure_latencies(models, example, warmup=cfg.latency_warmup, repeats=cfg.latency_repeats,
                                 threads=threads)
    results = {name: assemble.model_result(m, test, example, batch_size=cfg.batch_size, latency=lats[name],
                                           before_finetune=before_ft.get(name), metrics=metrics[name],
                                           extra={"rule": cfg.methods[name]} if name in cfg.methods else None)
               for name, m in models.items()}

    with clock.phase("write the report"):
        first = next(iter(plans.values()), None)
        tau = next((r["variance"] for r in cfg.methods.values() if "variance" in r), None)
        tiles = assemble.samples(test, {"baseline": model, **pruned_models}, cfg.samples)
        meta = {
            "fastprune": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown",
            "torch_threads": threads, "latency": f"median of {cfg.latency_repeats} CPU forward passes per model after {cfg.latency_warmup} "
                       f"warm-up rounds, models interleaved round by round, input {list(example.shape)}",
            "macs": f"multiply-accumulates of one forward pass on {list(example.shape)}",
            "config": asdict(cfg), "baseline_history": _history(history),
        }
        render_report(out / "report", results, layers, assemble.spectra(stats, first) if first else None, tau,
                      tiles, meta=meta, num_classes=getattr(test, "num_classes", 2), title="fastprune demo")
    meta["seconds"] = {**clock.phases, "total": round(clock.total, 1)}
    (out / "report" / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    summ = summary(results)
    log("")
    log(closing_table(summ))
    log(f"\ntotal {clock.total:.0f} s; report: {out / 'report' / 'index.html'}")
    return summ


def classifier_input(model: torch.nn.Module) -> list[str]:
    """The convolution feeding the final (classifier) convolution, in module order: its channels
    carry the class evidence, and energy-based criteria cannot tell discriminative channels from
    common-mode ones there, so the demo keeps that layer whole."""
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-2:-1]


def _history(h: Any) -> Any:
    if isinstance(h, dict) and "epochs" in h:
        return [{**{k: e.get(k) for k in ("epoch", "loss", "seconds")},
                 "val_building_iou": (e.get("val") or {}).get("building_iou")} for e in h["epochs"]]
    return None


def closing_table(summ: dict[str, dict[str, Any]]) -> str:
    """The table the demo ends with: size, cost, latency and accuracy against the unpruned model."""
    base = summ["baseline"]
    head = f"{'model':<10} {'params':>10} {'Δparams':>8} {'MACs':>14} {'ΔMACs':>7} {'latency ms':>10} " \
           f"{'IoU %':>7} {'ΔIoU pt':>7} {'mIoU %':>7} {'pix acc %':>9}"
    lines = [head, "-" * len(head)]
    for name, r in summ.items():
        is_base = name == "baseline"
        dp = "" if is_base else f"{-100 * r['params_reduction']:+.1f}%"
        dm = "" if is_base else f"{-100 * r['macs_reduction']:+.1f}%"
        di = "" if is_base else f"{100 * r['iou_change']:+.2f}"
        label = "unpruned" if is_base else name
        lines.append(f"{label:<10} {r['params']:>10,} {dp:>8} {r['macs']:>14,} {dm:>7} {r['latency_ms']:>10.2f} "
                     f"{100 * r['iou']:>7.2f} {di:>7} {100 * r['miou']:>7.2f} {100 * r['pixel_accuracy']:>9.2f}")
    return "\n".join(lines)
