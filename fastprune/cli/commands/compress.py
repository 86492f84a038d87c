"""Compress a trained model iteratively toward a MACs or parameter budget: k steps on a geometric
schedule, each re-collecting statistics, allocating per-layer counts by redundancy, selecting
and removing channels layer by layer with reconstruction, recalibrating batch norm and
fine-tuning (the total --finetune-epochs are spread over the steps, the unpruned model is the
teacher). With --levels a U-Net first loses the deepest levels its statistics judge redundant.

Resumable: OUT/run holds every finished step (model and statistics); run the same command again
after an interruption and it continues. Different arguments on an existing OUT are refused.
Writes OUT/model (the compressed model folder) and OUT/report (index.html, summary.json)."""
from __future__ import annotations

import argparse
import copy

from ..pipeline import add_finetuning, add_model_and_data, pipeline_options

HELP = "iterative compression to a MACs/params budget (resumable); writes model and report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_and_data(p)
    add_finetuning(p)
    p.add_argument("--method", default="subset", help="selection criterion within each layer (default subset)")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--target-macs", type=float, metavar="R", help="remove this fraction of the MACs")
    rule.add_argument("--target-params", type=float, metavar="R", help="remove this fraction of the parameters")
    p.add_argument("--steps", type=int, default=3, help="steps of the geometric schedule (default 3)")
    p.add_argument("--levels", action="store_true",
                   help="first remove the deepest U-Net levels whose channels are redundant (as `fastprune levels`)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (run state, model, report)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..artifacts import LoadedModel, load_model, save_model
    from ..errors import UsageError
    from ..job import classifier_input
    from ..specs import open_data, parse_model_spec

    if args.steps < 1 or args.finetune_epochs < 0 or args.batch_size < 1:
        raise UsageError("need --steps >= 1, --finetune-epochs >= 0 and --batch-size >= 1")
    from ..outputs import refuse_inputs
    out = Path(args.out)
    refuse_inputs(args, out)
    if out.exists() and any(out.iterdir()) and not (out / "run").is_dir():
        raise UsageError(f"--out {out} exists and holds no compress run; choose a new folder")
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    if loaded.pruned:
        raise UsageError("--model must be an unpruned model (compress prunes it itself)")
    train, val = open_data(args.data), open_data(args.val_data)
    test = open_data(args.test_data) if args.test_data else val
    from ...workflows import compress

    model = loaded.model.eval()
    teacher = copy.deepcopy(model).eval()
    target = {"target_macs": args.target_macs} if args.target_macs is not None else {"target_params": args.target_params}
    pruned, history = compress(model, train, val, method=args.method, steps=args.steps,
                               teacher=teacher, levels=args.levels, **pipeline_options(args),
                               exclude=[] if args.prune_classifier_input else classifier_input(model),
                               seed=args.seed, out=out / "run", **target)
    spec = loaded.spec
    if history["levels_removed"]:
        spec = parse_model_spec(_with_depth(spec, spec.options.get("depth", 4) - history["levels_removed"]))
    from ...planning.plan import Plan

    final = Plan.load(out / "run" / f"step-{len(history['steps'])}" / "model" / "plan.json")
    save_model(out / "model", LoadedModel(pruned, spec, final), compress=history)
    from ...report.assemble import model_result
    from ...report.render import render_report

    example = test[0][0][None]  # one tile of the data: MACs per tile
    results = {"baseline": model_result(model, test, example, batch_size=args.batch_size),
               "compress": model_result(pruned, test, example, batch_size=args.batch_size)}
    render_report(out / "report", results, meta={"command": "fastprune compress", "history": history},
                  title="fastprune compress")
    b, a = results["baseline"], results["compress"]
    print(f"compressed in {len(history['steps'])} steps ({history['seconds']:.0f} s, levels removed: "
          f"{history['levels_removed']}): MACs {b.macs:,} -> {a.macs:,} ({100 * (1 - a.macs / b.macs):.1f}% fewer), "
          f"building IoU {100 * b.iou:.2f} -> {100 * a.iou:.2f}% -> {out}")
    return 0


def _with_depth(spec, depth: int) -> str:
    """The SPEC of the same built-in U-Net with `depth` levels (what removing levels leaves)."""
    opts = {**spec.options, "depth": depth}
    return f"{spec.name}:" + ",".join(f"{k}={v}" for k, v in opts.items())
