"""Train a model (or fine-tune a pruned one) on a data set; writes a model folder. Also how a
baseline is trained: `fastprune finetune --model unet:base_width=16 --data ... --out base/`."""
from __future__ import annotations

import argparse

HELP = "train / fine-tune a model; writes a model folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder (e.g. from prune)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint to start from")
    p.add_argument("--data", required=True, metavar="SPEC", help="training data SPEC")
    p.add_argument("--val-data", metavar="SPEC", help="validation data SPEC (metrics before and after)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the trained model")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_model, save_model
    from ..errors import UsageError
    from ..specs import open_data

    if args.epochs < 0 or args.batch_size < 1 or args.lr <= 0:
        raise UsageError("need --epochs >= 0, --batch-size >= 1 and --lr > 0")
    loaded = load_model(args.model, args.weights)
    train = open_data(args.data)
    val = open_data(args.val_data) if args.val_data else None
    from ...report.records import metrics_from_evaluation
    from ...train import evaluate, fit

    extra = {}
    if val is not None:
        extra["metrics_before_finetune"] = metrics_from_evaluation(evaluate(loaded.model, val))
    fit(loaded.model, train, val, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    if val is not None:
        extra["metrics"] = metrics_from_evaluation(evaluate(loaded.model, val))
    extra["finetune"] = {"data": args.data, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
    save_model(args.out, loaded, **extra)
    msg = f"trained {args.model} for {args.epochs} epochs -> {args.out}"
    if val is not None:
        b, a = extra["metrics_before_finetune"], extra["metrics"]
        msg += f" (building IoU {100 * b['iou']:.2f} -> {100 * a['iou']:.2f})"
    print(msg)
    return 0
