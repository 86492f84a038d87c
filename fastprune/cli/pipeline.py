"""Arguments `compress` and `compare` share: the trained model, the data, and how each pruned
model is reconstructed and fine-tuned."""
from __future__ import annotations

import argparse

from ..workflows.allocate import WORKFLOW_ALLOCATIONS
from .artifacts import add_trust_code


def add_model_and_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC", help="trained model: folder or SPEC (with --weights)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint of the model")
    p.add_argument("--data", required=True, metavar="SPEC", help="training data (statistics and fine-tuning)")
    p.add_argument("--val-data", required=True, metavar="SPEC", help="validation data (picks the best epoch)")
    p.add_argument("--test-data", metavar="SPEC", help="data the reported IoU is measured on (default: --val-data)")
    add_trust_code(p)


def add_finetuning(p: argparse.ArgumentParser) -> None:
    p.add_argument("--finetune-epochs", type=int, default=8, help="fine-tuning epochs (default 8)")
    p.add_argument("--reconstruct", choices=("refit", "fold", "none"), default="refit",
                   help="consumer reconstruction after each removal (default refit)")
    p.add_argument("--distill", type=float, default=0.5, help="distillation weight to the unpruned model (default 0.5)")
    p.add_argument("--lr", type=float, default=2e-3, help="fine-tuning learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--stats-batches", type=int, default=8, help="batches per statistics pass (default 8)")
    p.add_argument("--allocation", choices=WORKFLOW_ALLOCATIONS, default="redundancy",
                   help="how the budget is spread over the layers: redundancy (one PCA tau for all layers, "
                        "default), marginal (greedy: least explained variance per MAC or parameter freed), "
                        "uniform (one ratio)")
    p.add_argument("--prune-classifier-input", action="store_true",
                   help="also prune the layer feeding the classifier (kept whole by default, as in the demo)")


def reconstruction(args: argparse.Namespace) -> str | None:
    return None if args.reconstruct == "none" else args.reconstruct
