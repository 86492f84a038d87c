"""Decide which channels every layer keeps, from a statistics file: choose the criterion
(--method) and the rule (--variance, --ratio, --target-macs, --target-params, --tolerance)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "make a pruning plan (plan.json) from a statistics file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stats", metavar="STATS.fps", help="statistics file written by `fastprune score`")
    p.add_argument("--method", required=True, help="criterion: pca_nci, lfa, msd_nci, nci, l1, l2, fpgm, apoz, ...")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--variance", type=float, metavar="TAU", help="explained-variance threshold τ in (0, 1]")
    rule.add_argument("--ratio", type=float, metavar="R", help="fraction of channels to remove in every layer")
    rule.add_argument("--target-macs", type=float, metavar="R", help="remove this fraction of the model's MACs")
    rule.add_argument("--target-params", type=float, metavar="R", help="remove this fraction of the parameters")
    rule.add_argument("--tolerance", type=float, metavar="EPS", help="error tolerance ε (methods that support it)")
    p.add_argument("--factors", choices=("kaiser", "variance", "se_scree"),
                   help="lfa: how many factors (kaiser: eigenvalues >= 1; variance: with --variance; se_scree)")
    p.add_argument("--alpha", type=float, help="msd_nci: prune below mean - alpha*std of the score distribution")
    p.add_argument("--percentile", type=float, help="msd_nci: prune below this percentile instead")
    p.add_argument("--exclude", nargs="+", default=None, metavar="LAYER", help="layers that keep every channel")
    p.add_argument("--min-channels", type=int, default=None, help="never keep fewer channels in a layer")
    p.add_argument("--round-to", type=int, default=None, help="round kept counts to a multiple of this")
    p.add_argument("--data", metavar="SPEC", help="validation data for --tolerance (the metric below is kept within ε)")
    p.add_argument("--metric", default="building_iou", choices=("building_iou", "miou", "pixel_accuracy"),
                   help="metric --tolerance guards (default building_iou)")
    p.add_argument("--model", metavar="SPEC", help="model SPEC (default: the one recorded in the statistics)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint (default: the one recorded in the statistics)")
    p.add_argument("--out", required=True, metavar="plan.json", help="plan file to write")


def rule_options(args: argparse.Namespace) -> dict:
    opts = {k: getattr(args, k) for k in ("variance", "ratio", "target_macs", "target_params", "tolerance",
                                          "factors", "alpha", "percentile", "exclude", "min_channels", "round_to")
            if getattr(args, k, None) is not None}
    return opts


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_model
    from ..errors import UsageError

    path = Path(args.stats)
    if not path.is_file():
        raise UsageError(f"statistics file not found: {path}")
    from ...stats.statistics import Statistics

    stats = Statistics.load(path)
    rec = stats.meta.get("model") or {}
    spec = args.model or rec.get("folder") or rec.get("spec")
    weights = args.weights if args.model or args.weights else rec.get("weights")
    if not spec:
        raise UsageError(f"{path} records no model: pass --model (and --weights)")
    if weights and not Path(weights).is_file():
        raise UsageError(f"checkpoint {weights} (recorded in {path}) not found: pass --weights")
    loaded = load_model(spec, weights)
    stats.check_model(loaded.model, stats.example_inputs(loaded.model))
    from ...planning import plan as make_plan

    opts = rule_options(args)
    if args.tolerance is not None:
        if not args.data:
            raise UsageError("--tolerance needs --data (validation data the metric is measured on)")
        from ...train import evaluate

        from ..specs import open_data

        val = open_data(args.data)
        opts.update(evaluate=lambda m: evaluate(m, val, progress=False)[args.metric], higher_is_better=True)
    plan = make_plan(loaded.model, stats, method=args.method, **opts)
    plan.meta.setdefault("method", args.method)
    plan.meta["model"] = loaded.spec.text
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan.save(out)
    kept = sum(len(v) for v in plan.keep.values())
    total = sum(plan.channels.values())
    print(f"{args.method}: keeps {kept} of {total} channels in {len(plan.keep)} layers -> {out}")
    return 0
