"""Apply a plan: physically smaller layers, weights sliced; writes a model folder (pruned
weights + plan) that `evaluate`, `finetune` and `report` read, and that replays on a fresh model."""
from __future__ import annotations

import argparse

HELP = "apply a plan to a model; writes a pruned model folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder (pruning again is fine)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint of the unpruned model")
    p.add_argument("--plan", required=True, metavar="plan.json", help="plan written by `fastprune plan`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the pruned model")
    p.add_argument("--input-size", default="64", metavar="N|HxW", help="example input size for tracing (default 64)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...planning.plan import Plan
    from ..artifacts import LoadedModel, load_model, save_model
    from ..errors import UsageError
    from ..specs import example_input, parse_size

    if not Path(args.plan).is_file():
        raise UsageError(f"plan file not found: {args.plan}")
    plan = Plan.load(args.plan)
    loaded = load_model(args.model, args.weights)
    example = example_input(loaded.model, parse_size(args.input_size))
    from ...graph.cost import count
    from ...surgery import prune

    before = count(loaded.model, example)
    model = prune(loaded.model, plan, example)
    after = count(model, example)
    save_model(args.out, LoadedModel(model, loaded.spec, plan))
    print(f"pruned {args.model}: params {before.params:,} -> {after.params:,} "
          f"({100 * (1 - after.params / before.params):.1f}% fewer), MACs {before.macs:,} -> {after.macs:,} "
          f"({100 * (1 - after.macs / before.macs):.1f}% fewer) -> {args.out}")
    return 0
