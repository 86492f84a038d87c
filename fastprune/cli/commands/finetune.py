"""Train a model (or fine-tune a pruned one) on a data set; writes a model folder. Also how a
baseline is trained: `fastprune finetune --model unet:base_width=16 --data ... --out base/`.

After every epoch the run is checkpointed to OUT.partial/ (weights, optimizer, schedule, data
order, RNG states); an interrupted run continues from there with --resume and ends exactly as
an uninterrupted one would (same model, data, batch size and options, else refused)."""
from __future__ import annotations

import argparse

from ..argtypes import finite_float

HELP = "train / fine-tune a model; writes a model folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..artifacts import add_trust_code

    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder (e.g. from prune)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint to start from")
    p.add_argument("--data", required=True, metavar="SPEC", help="training data SPEC")
    p.add_argument("--val-data", metavar="SPEC", help="validation data SPEC (metrics before and after)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--lr", type=finite_float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and initial RNG state (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the trained model")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run that left OUT.partial/")
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    import torch

    from ...train.checkpoint import has_checkpoint
    from ..artifacts import load_model, save_model
    from ..errors import UsageError
    from ..outputs import check_output
    from ..specs import open_data

    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise UsageError("need --epochs >= 1, --batch-size >= 1 and --lr > 0")
    out = check_output(args, args.out, "model")
    partial = out.with_name(out.name + ".partial")
    if partial.exists() and not has_checkpoint(partial):
        raise UsageError(f"{partial} exists and is not a checkpoint fastprune wrote: it is left as it is "
                         "(choose another --out)")
    if args.resume and not partial.exists():
        raise UsageError(f"--resume: no interrupted run to continue ({partial} not found)")
    if partial.exists() and not args.resume:
        shutil.rmtree(partial)  # an interrupted run's checkpoint (checked above)
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    train = open_data(args.data, args.batch_size)
    val = open_data(args.val_data, args.batch_size) if args.val_data else None
    from ...report.records import metrics_from_evaluation
    from ...train import evaluate, fit

    torch.manual_seed(args.seed)
    extra = {}
    if val is not None:
        extra["metrics_before_finetune"] = metrics_from_evaluation(evaluate(loaded.model, val, batch_size=args.batch_size))
    key = {"data": args.data, "model": str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model,
           "weights": args.weights}
    fit(loaded.model, train, val, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        checkpoint=partial, resume=args.resume, resume_key=key)
    if val is not None:
        extra["metrics"] = metrics_from_evaluation(evaluate(loaded.model, val, batch_size=args.batch_size))
    extra["finetune"] = {"data": args.data, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                         "seed": args.seed}
    save_model(out, loaded, **extra)
    shutil.rmtree(partial, ignore_errors=True)
    msg = f"trained {args.model} for {args.epochs} epochs -> {args.out}"
    if val is not None:
        b, a = extra["metrics_before_finetune"], extra["metrics"]
        msg += f" (building IoU {100 * b['iou']:.2f} -> {100 * a['iou']:.2f})"
    print(msg)
    return 0
