"""Write the report (index.html with figures, summary.json) for an unpruned model and pruned model
folders: evaluates each on the data, counts params/MACs, times them on the CPU (interleaved), and
draws per-layer charts from the plans (and eigenvalue spectra from a statistics file)."""
from __future__ import annotations

import argparse

HELP = "report: compare the unpruned model with pruned model folders"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..argtypes import finite_float
    from ..artifacts import add_trust_code

    p.add_argument("--model", required=True, metavar="SPEC", help="the unpruned model: SPEC or model folder")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint of the unpruned model")
    p.add_argument("--pruned", nargs="+", required=True, metavar="DIR", help="pruned model folders (prune/finetune --out)")
    p.add_argument("--data", required=True, metavar="SPEC", help="evaluation data SPEC")
    p.add_argument("--stats", metavar="STATS.fps", help="statistics file (adds the eigenvalue spectra)")
    p.add_argument("--variance", type=finite_float, metavar="TAU", help="τ line drawn on the spectra")
    p.add_argument("--input-size", metavar="N|HxW",
                   help="input for MACs and latency (default 256; a classifier: its data's image size)")
    p.add_argument("--repeats", type=int, default=10, help="timed CPU forward passes per model (default 10)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the latency measurement")
    p.add_argument("--samples", type=int, default=3, help="sample tiles to show (default 3)")
    p.add_argument("--out", default="report", metavar="DIR", help="report folder (default ./report)")
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ...report import assemble, measure_latencies, render_report
    from ..artifacts import load_model, load_stats
    from ..errors import UsageError
    from ..outputs import check_output
    from ..specs import example_input, is_model_dir, open_data, parse_size

    if args.repeats < 1 or (args.threads is not None and args.threads < 1) or args.samples < 0:
        raise UsageError("need --repeats >= 1, --threads >= 1 and --samples >= 0")
    if args.variance is not None and not 0 < args.variance <= 1:
        raise UsageError(f"--variance {args.variance}: the explained-variance threshold is in (0, 1]")
    check_output(args, args.out, "report")
    size = parse_size(args.input_size) if args.input_size else None  # checked before any work
    base = load_model(args.model, args.weights, trust_code=args.trust_code)
    pruned = {}
    for folder in args.pruned:
        if not is_model_dir(folder):
            raise UsageError(f"{folder} is not a model folder written by `fastprune prune` or `finetune`")
        lm = load_model(folder, trust_code=args.trust_code)
        if not lm.pruned:
            raise UsageError(f"{folder} holds an unpruned model")
        name = lm.doc.get("method") or Path(folder).name
        if name in pruned or name == "baseline":
            name = f"{name}:{Path(folder).name}"
        pruned[name] = lm
    data = open_data(args.data, 8)
    if len(data) == 0:
        raise UsageError(f"data SPEC {args.data!r} holds no samples")
    classifier = getattr(data, "task", None) == "classification"
    if size is None:
        size = tuple(data[0][0].shape[-2:]) if classifier else (256, 256)
    example = example_input(base.model, size)
    stats = load_stats(args.stats) if args.stats else None
    if stats is not None:
        try:
            stats.check_model(base.model, stats.example_inputs(base.model))
        except ValueError as exc:
            raise UsageError(f"--stats {args.stats}: {str(exc).removeprefix('fastprune: ')} (give the statistics "
                             f"of {args.model})") from None
    from ...graph.cost import count

    models = {"baseline": base.model, **{k: v.model for k, v in pruned.items()}}
    lats = measure_latencies(models, example, repeats=args.repeats, threads=args.threads)
    before = count(base.model, example)
    results = {name: assemble.model_result(m, data, example, latency=lats[name], before_finetune=(
        pruned[name].doc.get("metrics_before_finetune") if name in pruned else None)) for name, m in models.items()}
    layers = {name: assemble.layer_records(p.plan, unpruned_count(p, base, before, example, args.trust_code),
                                           count(p.model, example)) for name, p in pruned.items()}
    spectra = None
    if stats is not None and pruned:
        spectra = assemble.spectra(stats, next(iter(pruned.values())).plan)
    meta = {"model": args.model, "data": args.data, "torch_threads": lats["baseline"].threads,
            "latency": f"median of {args.repeats} CPU forward passes per model, interleaved, input {list(example.shape)}",
            "macs": f"multiply-accumulates of one forward pass on {list(example.shape)}", "torch": torch.__version__}
    samples = [] if classifier else assemble.samples(data, models, args.samples)  # pictures of masks
    path = render_report(args.out, results, layers, spectra, args.variance, samples, meta=meta,
                         num_classes=getattr(data, "num_classes", 2))
    print(f"report: {path}")
    return 0


def unpruned_count(pruned, base, before, example, trust_code: bool = False):
    """Per-layer costs of the network `pruned` was cut from: `before` (the --model's) when that
    is its SPEC, else its own SPEC's (a U-Net made shallower by `fastprune levels` has other
    layers than --model under the same names)."""
    from ...graph.cost import count
    from ..artifacts import load_model

    if pruned.spec.text == base.spec.text:
        return before
    return count(load_model(pruned.spec.text, trust_code=trust_code).model.eval(), example)
