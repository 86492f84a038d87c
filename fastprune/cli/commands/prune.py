"""Apply a plan: physically smaller layers, weights sliced; writes a model folder (pruned
weights + plan) that `evaluate`, `finetune` and `report` read, and that replays on a fresh model.

A plan made by `--method gates` records the weights its tolerance was checked on (the
gates folded in, plan.weights.safetensors beside the plan): those are loaded into the model
before it is pruned (they replace --weights), after checking their sha256."""
from __future__ import annotations

import argparse

HELP = "apply a plan to a model; writes a pruned model folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..artifacts import add_trust_code

    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder (pruning again is fine)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint of the unpruned model")
    p.add_argument("--plan", required=True, metavar="plan.json",
                   help="plan written by `fastprune plan` (with its .weights.safetensors if it has one)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the pruned model")
    p.add_argument("--input-size", default="64", metavar="N|HxW", help="example input size for tracing (default 64)")
    p.add_argument("--reconstruct", choices=("refit", "fold"), default=None,
                   help="reconstruct the consumers of removed channels: refit (least squares on the patch Gram; "
                        "score with --patch-gram) or fold (regression on the covariance); needs --stats")
    p.add_argument("--stats", metavar="STATS.fps", help="statistics of the unpruned model (for --reconstruct)")
    p.add_argument("--data", metavar="SPEC", help="recalibrate batch norm on this data after surgery")
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    from ..._documents import weights_digest
    from ..artifacts import LoadedModel, load_model, load_stats, save_model
    from ..errors import UsageError
    from ..outputs import check_output
    from ..plans import apply_plan_weights, load_plan
    from ..specs import example_input, open_data, parse_size

    check_output(args, args.out, "model")
    size = parse_size(args.input_size)
    plan = load_plan(args.plan)
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    recorded = plan.meta.get("weights_digest")  # a plan with its own weights file replaces the model's
    if recorded is not None and plan.meta.get("weights") is None and recorded != weights_digest(loaded.model):
        raise UsageError(f"plan {args.plan} was made on other weights than those of {args.model}"
                         f"{' with ' + args.weights if args.weights else ''} (weights digest {str(recorded)[:12]}..., "
                         f"this model's is {weights_digest(loaded.model)[:12]}...): give the model and --weights "
                         "it was planned on")
    folded = apply_plan_weights(plan, args.plan, loaded.model)
    example = example_input(loaded.model, size)
    from ...graph.cost import count
    from ...surgery import prune

    before = count(loaded.model, example)
    try:
        if args.reconstruct:
            if not args.stats:
                raise UsageError("--reconstruct needs --stats STATS.fps (statistics of the unpruned model)")
            from ...surgery.reconstruct import prune_reconstructed
            stats = load_stats(args.stats)
            stats.check_model(loaded.model, example)
            model = prune_reconstructed(loaded.model, plan, stats, example, mode=args.reconstruct)
        else:
            model = prune(loaded.model, plan, example)
    except ValueError as exc:
        raise UsageError(f"plan {args.plan}: {str(exc).removeprefix('fastprune: ')}") from None
    if args.data:
        from torch.utils.data import DataLoader

        from ...train.recalibrate import recalibrate_batchnorm
        recalibrate_batchnorm(model, DataLoader(open_data(args.data), batch_size=8, shuffle=False))
    after = count(model, example)
    save_model(args.out, LoadedModel(model, loaded.spec, plan))
    how = f", consumers reconstructed by {args.reconstruct}" if args.reconstruct else ""
    print(f"pruned {args.model}{how}{f' (weights {folded})' if folded else ''}: params {before.params:,} -> "
          f"{after.params:,} ({100 * (1 - after.params / before.params):.1f}% fewer), MACs {before.macs:,} -> "
          f"{after.macs:,} ({100 * (1 - after.macs / before.macs):.1f}% fewer) -> {args.out}")
    return 0
