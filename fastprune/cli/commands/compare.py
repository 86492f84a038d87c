"""Compare pruning methods on a trained model: methods x budgets x seeds, each pruned to the same
per-layer allocation (counts by redundancy for the budget), selected by the method,
reconstructed and fine-tuned for the same epochs with the unpruned model as teacher. Writes
OUT/index.html (table, IoU-vs-MACs frontier with mean ± sd over seeds, before and after
fine-tuning) and OUT/summary.json. Methods: criterion names (subset, random, nci, l1, ...), or
NAME:steps=N for iterative compression (`fastprune compress`) with the same total epochs."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..pipeline import add_finetuning, add_model_and_data, pipeline_options

HELP = "methods x budgets x seeds: the IoU-vs-MACs frontier of a trained model (HTML + summary.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_and_data(p)
    add_finetuning(p)
    p.add_argument("--methods", nargs="+", default=["subset", "random"], metavar="METHOD",
                   help="criteria to compare (default: subset random); NAME:steps=N compresses iteratively")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--target-macs", type=float, nargs="+", metavar="R", help="fractions of the MACs to remove")
    rule.add_argument("--target-params", type=float, nargs="+", metavar="R", help="fractions of the params to remove")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (new, or one compare wrote: an interrupted run there continues)")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_model
    from ..errors import UsageError
    from ..job import classifier_input
    from ..specs import open_data

    if args.finetune_epochs < 0 or args.batch_size < 1:
        raise UsageError("need --finetune-epochs >= 0 and --batch-size >= 1")
    from ...report.frontier import check_out, compare, vs_random_text

    from ..outputs import check_output
    check_output(args, args.out, "compare")
    check_out(args.out)
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    if loaded.pruned:
        raise UsageError("--model must be an unpruned model (compare prunes it itself)")
    train, val = open_data(args.data), open_data(args.val_data)
    test = open_data(args.test_data) if args.test_data else None
    targets = {"target_macs": args.target_macs} if args.target_macs else {"target_params": args.target_params}
    result = compare(loaded.model.eval(), train, val, test, methods=args.methods, seeds=args.seeds,
                     **pipeline_options(args),
                     exclude=[] if args.prune_classifier_input else classifier_input(loaded.model),
                     out=args.out, meta={"command": " ".join(["fastprune compare", *_argv(args)])},
                     log=print, **targets)
    path = Path(args.out) / "index.html"
    base = result["baseline"]["building_iou"]
    print(f"unpruned building IoU {100 * base:.2f}%")
    for e in result["summary"]:
        before = "–" if e["iou_before"] is None else f"{100 * e['iou_before']:.2f}"
        paired = vs_random_text(e)
        paired = "" if paired is None else f"; vs random, paired: {paired}"
        print(f"{e['method']:>16} {100 * e['target']:.0f}%: MACs -{100 * e['macs_removed']:.1f}%, IoU before FT "
              f"{before}, after {100 * e['iou']:.2f} ± {100 * e['iou_sd']:.2f} ({100 * (e['iou'] - base):+.2f} pt"
              f"{paired})")
    print(f"report: {path}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k in ("run", "command") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, *(map(str, v) if isinstance(v, list) else [str(v)])]
    return out
