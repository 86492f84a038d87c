"""Arguments `compress` and `compare` share: the trained model, the data, and how each pruned
model is reconstructed and fine-tuned."""
from __future__ import annotations

import argparse

from ..workflows.allocate import WORKFLOW_ALLOCATIONS
from ..workflows.pipeline import Pipeline
from .argtypes import finite_float
from .artifacts import add_trust_code


def add_model_and_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC", help="trained model: folder or SPEC (with --weights)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint of the model")
    p.add_argument("--data", required=True, metavar="SPEC", help="training data (statistics and fine-tuning)")
    p.add_argument("--val-data", required=True, metavar="SPEC",
                   help="validation data (metrics per fine-tuning epoch; --keep-best picks an epoch by it)")
    p.add_argument("--test-data", metavar="SPEC", help="data the reported IoU is measured on (default: --val-data)")
    add_trust_code(p)


def add_finetuning(p: argparse.ArgumentParser) -> None:
    d = Pipeline()  # the defaults of every option below
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help=f"fine-tuning epochs (default {d.finetune_epochs})")
    p.add_argument("--reconstruct", choices=("refit", "fold", "none"), default=d.reconstruct or "none",
                   help=f"consumer reconstruction after each removal (default {d.reconstruct})")
    p.add_argument("--distill", type=finite_float, default=d.distill,
                   help=f"distillation weight to the unpruned model (default {d.distill})")
    p.add_argument("--temperature", type=finite_float, default=d.temperature,
                   help=f"distillation temperature (default {d.temperature})")
    p.add_argument("--lr", type=finite_float, default=d.lr, help=f"fine-tuning learning rate (default {d.lr})")
    p.add_argument("--keep-best", metavar="METRIC", default=d.keep_best,
                   help="keep the fine-tuning epoch with the best --val-data METRIC (building_iou, miou, "
                        "pixel_accuracy; default: the last epoch)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default {d.batch_size})")
    p.add_argument("--stats-batches", type=int, default=d.stats_batches,
                   help=f"batches per statistics pass (default {d.stats_batches})")
    p.add_argument("--allocation", choices=WORKFLOW_ALLOCATIONS, default=d.allocation,
                   help="how the budget is spread over the layers: redundancy (one PCA tau for all layers, "
                        "default), marginal (greedy: least explained variance per MAC or parameter freed), "
                        "uniform (one ratio)")
    p.add_argument("--prune-classifier-input", action="store_true",
                   help="also prune the layer feeding the classifier (kept whole by default, as in the demo)")


def reconstruction(args: argparse.Namespace) -> str | None:
    return None if args.reconstruct == "none" else args.reconstruct


def pipeline_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of `compare` / `compress` that `add_finetuning` parsed."""
    return {"finetune_epochs": args.finetune_epochs, "reconstruct": reconstruction(args), "distill": args.distill,
            "temperature": args.temperature, "lr": args.lr, "keep_best": args.keep_best,
            "batch_size": args.batch_size, "stats_batches": args.stats_batches, "allocation": args.allocation}
