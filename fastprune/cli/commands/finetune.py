"""Train a model (or fine-tune a pruned one) on a data set; writes a model folder. Also how a
baseline is trained: `fastprune finetune --model unet:base_width=16 --data ... --out base/`.

With --teacher (e.g. the unpruned model folder) the loss is (1 - d) x task loss + d x the
temperature-softened KL divergence to the teacher's outputs (d = --distill); --keep-best
restores the weights of the epoch with the best --val-data metric. Both are what `fastprune
demo` does after pruning.

After every epoch the run is checkpointed to OUT.partial/ (weights, optimizer, schedule, data
order, RNG states); an interrupted run continues from there with --resume and ends exactly as
an uninterrupted one would (same model, data, batch size and options, else refused)."""
from __future__ import annotations

import argparse

from ..argtypes import finite_float

HELP = "train / fine-tune a model (optionally distilled from a teacher); writes a model folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...train.losses import DISTILL_TEMPERATURE
    from ..artifacts import add_trust_code

    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder (e.g. from prune)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint to start from")
    p.add_argument("--data", required=True, metavar="SPEC", help="training data SPEC")
    p.add_argument("--val-data", metavar="SPEC", help="validation data SPEC (metrics before and after)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--lr", type=finite_float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="adamw (default) or sgd (Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=finite_float, default=1e-4, help="weight decay (default 1e-4)")
    p.add_argument("--teacher", metavar="SPEC", help="distil from this model (SPEC or model folder, e.g. the unpruned one)")
    p.add_argument("--teacher-weights", metavar="CKPT", help="checkpoint of the --teacher")
    p.add_argument("--distill", type=finite_float, default=0.5,
                   help="with --teacher: weight d of the distillation term, in [0, 1] (default 0.5)")
    p.add_argument("--temperature", type=finite_float, default=DISTILL_TEMPERATURE,
                   help=f"with --teacher: softmax temperature (default {DISTILL_TEMPERATURE})")
    p.add_argument("--keep-best", metavar="METRIC",
                   help="keep the weights of the epoch with the best --val-data METRIC (building_iou, miou, "
                        "pixel_accuracy; accuracy for a classifier)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights of a SPEC, the data order and the RNG state (default 0)")
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

    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.weight_decay < 0:
        raise UsageError("need --epochs >= 1, --batch-size >= 1, --lr > 0 and --weight-decay >= 0")
    if not 0 <= args.distill <= 1 or args.temperature <= 0:
        raise UsageError("need --distill in [0, 1] and --temperature > 0")
    if args.teacher_weights and not args.teacher:
        raise UsageError("--teacher-weights qualifies --teacher: give --teacher SPEC")
    if args.keep_best and not args.val_data:
        raise UsageError("--keep-best picks an epoch by its --val-data metric: give --val-data SPEC")
    out = check_output(args, args.out, "model")
    partial = out.with_name(out.name + ".partial")
    if partial.exists() and not has_checkpoint(partial):
        raise UsageError(f"{partial} exists and is not a checkpoint fastprune wrote: it is left as it is "
                         "(choose another --out)")
    if args.resume and not partial.exists():
        raise UsageError(f"--resume: no interrupted run to continue ({partial} not found)")
    if partial.exists() and not args.resume:
        shutil.rmtree(partial)  # an interrupted run's checkpoint (checked above)
    torch.manual_seed(args.seed)  # a SPEC's initial weights, as the demo draws them
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    teacher = (load_model(args.teacher, args.teacher_weights, trust_code=args.trust_code).model.eval()
               if args.teacher else None)
    train = open_data(args.data, args.batch_size)
    val = open_data(args.val_data, args.batch_size) if args.val_data else None
    from ...report.records import HEADLINE, metrics_from_evaluation
    from ...train import evaluate, fit

    extra = {}
    if val is not None:
        extra["metrics_before_finetune"] = metrics_from_evaluation(evaluate(loaded.model, val, batch_size=args.batch_size))

    def where(text: str | None) -> str | None:
        return str(Path(text).resolve()) if text and Path(text).is_dir() else text

    key = {"data": args.data, "model": where(args.model), "weights": args.weights,
           "teacher": where(args.teacher), "teacher_weights": args.teacher_weights}
    history = fit(loaded.model, train, val, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                  optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.seed, teacher=teacher,
                  distill=args.distill, temperature=args.temperature, keep_best=args.keep_best,
                  checkpoint=partial, resume=args.resume, resume_key=key)
    if val is not None:
        extra["metrics"] = metrics_from_evaluation(evaluate(loaded.model, val, batch_size=args.batch_size))
    extra["finetune"] = {"data": args.data, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                         "optimizer": args.optimizer, "weight_decay": args.weight_decay, "seed": args.seed,
                         "teacher": args.teacher, "distill": args.distill if args.teacher else None,
                         "temperature": args.temperature if args.teacher else None, "keep_best": args.keep_best,
                         "best": history.get("best")}
    save_model(out, loaded, **extra)
    shutil.rmtree(partial, ignore_errors=True)
    msg = f"trained {args.model} for {args.epochs} epochs -> {args.out}"
    if val is not None:
        b, a = extra["metrics_before_finetune"], extra["metrics"]
        key = "accuracy" if "accuracy" in a else "iou"
        label = HEADLINE["classification" if key == "accuracy" else "segmentation"][1]
        msg += f" ({label} {100 * b[key]:.2f} -> {100 * a[key]:.2f})"
    print(msg)
    return 0
