"""Decide which channels every layer keeps: choose the criterion (--method) and the rule
(--variance, --ratio, --target-macs, --target-params, --tolerance).

Every criterion but `gates` works from a statistics file (STATS.fps, written by `fastprune
score`; it also names the model and checkpoint). `--method gates` (learned importance
weights) trains one weight per filter on --train-data instead and prunes as far as the
--metric on --data stays within --tolerance ε; STATS.fps is optional for it (it names the
model and is checked against it), else give --model/--weights. The tolerance is checked on
the model with the trained gates, so gates also writes those gates folded into the weights,
beside the plan (plan.json -> plan.weights.safetensors, its sha256 recorded in the plan);
`fastprune prune` loads them before pruning. Keep the two files together."""
from __future__ import annotations

import argparse
from pathlib import Path

from ... import criteria
from ...criteria.lasso import SELECTIONS
from ...criteria.linalg import BASES
from ...planning.rules import ALLOCATIONS
from ..argtypes import finite_float

HELP = "make a pruning plan (plan.json) from a statistics file, or by learned gates"

GATE_INITS = (  # fastprune.train.gates.INITS, spelled out so `--help` needs no torch (tested equal)
    "ones", "uniform", "chaotic", "he", "lecun", "xavier")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..artifacts import add_trust_code

    p.add_argument("stats", nargs="?", metavar="STATS.fps",
                   help="statistics file written by `fastprune score` (optional for --method gates)")
    p.add_argument("--method", required=True, choices=(*criteria.names(), "gates"),
                   help="criterion (registered in fastprune.criteria), or gates (learned importance weights)")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--variance", type=finite_float, metavar="TAU", help="explained-variance threshold τ in (0, 1]")
    rule.add_argument("--ratio", type=finite_float, metavar="R", help="fraction of channels to remove in every layer")
    rule.add_argument("--target-macs", type=finite_float, metavar="R", help="remove this fraction of the model's MACs")
    rule.add_argument("--target-params", type=finite_float, metavar="R", help="remove this fraction of the parameters")
    rule.add_argument("--tolerance", type=finite_float, metavar="EPS",
                      help="error tolerance ε: the --metric on --data may drop by at most ε (gates: required)")
    p.add_argument("--allocation", choices=ALLOCATIONS,
                   help="how a --target-macs/--target-params budget is spread over layers: own (the method's own "
                        "per-layer count, its knob searched; default for pca_nci, msd_nci, lfa), global (one "
                        "threshold on normalised scores; default otherwise), uniform, redundancy (PCA counts)")
    p.add_argument("--relative", action="store_true", help="--tolerance is a fraction of the unpruned metric")
    p.add_argument("--basis", choices=BASES,
                   help="the matrix of PCA counts (--variance), pca_nci and lfa: correlation (default: "
                        "standardised channels, as the papers) or covariance (raw feature maps, as sklearn's PCA)")
    p.add_argument("--factors", choices=("kaiser", "variance", "se_scree"),
                   help="lfa: how many factors (kaiser: eigenvalues >= 1; variance: with --variance; se_scree)")
    p.add_argument("--selection", choices=SELECTIONS,
                   help="lasso: exact (default: the lambda leaving exactly k channels, as He et al. 2017) or path "
                        "(the k channels that stay longest on a fixed lambda path)")
    p.add_argument("--alpha", type=finite_float, help="msd_nci: prune below mean - alpha*std of the score distribution")
    p.add_argument("--percentile", type=finite_float, help="msd_nci: prune below this percentile instead")
    p.add_argument("--exclude", nargs="+", default=None, metavar="LAYER", help="layers that keep every channel")
    p.add_argument("--min-channels", type=int, default=None, help="never keep fewer channels in a layer")
    p.add_argument("--round-to", type=int, default=None, help="round kept counts to a multiple of this")
    p.add_argument("--data", metavar="SPEC", help="validation data for --tolerance (the metric below is kept within ε)")
    p.add_argument("--metric", default="building_iou", choices=("building_iou", "miou", "pixel_accuracy", "loss"),
                   help="what --tolerance guards: a metric (higher is better; default building_iou) or loss, "
                        "the validation cross-entropy (lower is better: it may rise by at most ε)")
    p.add_argument("--model", metavar="SPEC", help="model SPEC (default: the one recorded in the statistics)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint (default: the one recorded in the statistics)")
    g = p.add_argument_group("gates (learned importance weights; --tolerance, --data and --train-data required)")
    g.add_argument("--train-data", metavar="SPEC", help="data the gates are trained on")
    g.add_argument("--gate-init", choices=GATE_INITS, default="ones", help="initial gate values (default ones)")
    g.add_argument("--gate-epochs", type=int, default=10, help="epochs of gate training (default 10)")
    g.add_argument("--gate-lr", type=finite_float, default=0.05, help="learning rate of the gates (default 0.05)")
    g.add_argument("--gate-l1", type=finite_float, default=1e-3, help="L1 sparsity weight on the gates (default 1e-3)")
    g.add_argument("--gate-step", type=finite_float, default=0.02,
                   help="channels masked per step of the tolerance loop: a fraction of the prunable channels "
                        "(< 1) or a count (>= 1) (default 0.02)")
    g.add_argument("--train-base", action="store_true", help="train the model's weights jointly with the gates")
    g.add_argument("--gate-threshold", choices=("global", "layer"), default="global",
                   help="rank filters by |gate| (global) or by |gate| over the layer's initial gate RMS (layer: one "
                        "threshold for every layer whatever the fan-scaled --gate-init) (default global)")
    g.add_argument("--gate-retrain-epochs", type=int, default=0,
                   help="epochs of gate (and with --train-base, weight) training between pruning steps; a step "
                        "that leaves the tolerance is undone (default 0: no retraining)")
    g.add_argument("--batch-size", type=int, default=8, help="batch size of gate training and of --metric loss (default 8)")
    g.add_argument("--seed", type=int, default=0, help="seed of the gate initialisation and shuffling (default 0)")
    p.add_argument("--out", required=True, metavar="plan.json", help="plan file to write (gates: and "
                   "plan.weights.safetensors beside it)")
    add_trust_code(p)


def rule_options(args: argparse.Namespace) -> dict:
    opts = {k: getattr(args, k) for k in ("variance", "ratio", "target_macs", "target_params", "tolerance", "allocation",
                                          "basis", "factors", "selection", "alpha", "percentile", "exclude", "min_channels",
                                          "round_to")
            if getattr(args, k, None) is not None}
    return opts


def model_of_stats(args: argparse.Namespace):
    """(statistics or None, the model they name, or --model/--weights, checked against them)."""
    from ..artifacts import load_model, load_stats
    from ..errors import UsageError

    if args.stats is None:
        if args.method != "gates":
            raise UsageError(f"--method {args.method} plans from statistics: give STATS.fps (from `fastprune score`)")
        if not args.model:
            raise UsageError("--method gates without STATS.fps needs --model (and --weights)")
        return None, load_model(args.model, args.weights, trust_code=args.trust_code)
    path = Path(args.stats)
    stats = load_stats(path)
    try:
        stats.check_complete()
    except ValueError as exc:
        raise UsageError(f"{path}: {str(exc).removeprefix('fastprune: ')}") from None
    rec = stats.meta.get("model") if isinstance(stats.meta.get("model"), dict) else {}
    here = path.resolve().parent  # the file records paths relative to its folder

    def recorded(key: str) -> str | None:
        v = rec.get(key)
        return str(here / v) if isinstance(v, str) and v else None
    if args.model:
        loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    elif recorded("folder") and Path(recorded("folder")).is_dir():
        loaded = load_model(recorded("folder"), args.weights, trust_code=args.trust_code)
    elif rec.get("spec"):
        weights = args.weights or recorded("weights")
        if weights and not Path(weights).is_file():
            raise UsageError(f"checkpoint {rec.get('weights')} (recorded in {path}) not found: pass --weights")
        loaded = load_model(rec["spec"], weights, trust_code=args.trust_code, source=path)
    else:
        raise UsageError(f"{path} records no model: pass --model (and --weights)")
    try:
        stats.check_model(loaded.model, stats.example_inputs(loaded.model))
    except ValueError as exc:
        raise UsageError(f"{path}: {str(exc).removeprefix('fastprune: ')} (pass the model and --weights "
                         "they were collected on)") from None
    return stats, loaded


def _metric(args: argparse.Namespace):
    """evaluate(model) -> the --metric on --data (what --tolerance guards)."""
    from ...train import evaluate
    from ..errors import UsageError
    from ..specs import open_data

    if not args.data:
        raise UsageError("--tolerance needs --data (validation data the metric is measured on)")
    val = open_data(args.data, args.batch_size)
    if args.metric == "loss":
        from torch.utils.data import DataLoader

        from ...train.gates.fit import validation_value

        loader = DataLoader(val, batch_size=args.batch_size, shuffle=False)
        return val, lambda m: validation_value(m, loader, _loss(val))
    return val, lambda m: evaluate(m, val, progress=False)[args.metric]


def _loss(data):
    """Cross-entropy that leaves out the labels `data` marks as void (if any); a one-logit
    binary model (TernausNet) gets binary cross-entropy, as in training."""
    from ...train.losses import segmentation_loss

    ignore = getattr(data, "ignore_index", None)
    return lambda out, y: segmentation_loss(out, y, ignore_index=ignore)


def _check_gates_args(args: argparse.Namespace) -> None:
    """The user's errors in a `--method gates` command line, found before any loading."""
    from ..errors import UsageError

    others = [f"--{k.replace('_', '-')}" for k in rule_options(args) if k != "tolerance"]
    if others:
        raise UsageError(f"--method gates prunes by --tolerance alone: drop {' '.join(others)}")
    if args.tolerance is None:
        raise UsageError("--method gates prunes as far as the metric allows: give --tolerance EPS")
    if not args.train_data:
        raise UsageError("--method gates trains importance weights: give --train-data SPEC (and --data SPEC)")
    if args.gate_epochs < 0 or args.gate_lr <= 0 or args.gate_l1 < 0 or args.gate_step <= 0 or args.batch_size < 1 \
            or args.gate_retrain_epochs < 0:
        raise UsageError("need --gate-epochs >= 0, --gate-lr > 0, --gate-l1 >= 0, --gate-step > 0, --batch-size >= 1, "
                         "--gate-retrain-epochs >= 0")
    if args.gate_step >= 1 and args.gate_step != int(args.gate_step):
        raise UsageError(f"--gate-step {args.gate_step}: a count of channels (>= 1) is a whole number")
    if not args.data:
        raise UsageError("--method gates needs --data (validation data the metric is measured on)")


def _gates_plan(args: argparse.Namespace, stats, model):
    """`fastprune.train.gates.gates_plan` on the command line's data (as loaders) and options."""
    import torch
    from torch.utils.data import DataLoader

    from ..._documents import weights_digest
    from ...planning import Tolerance
    from ...train.gates import gates_plan

    from ..errors import UsageError
    from ..specs import open_data

    val, metric = _metric(args)
    train = open_data(args.train_data, args.batch_size)
    if len(train) == 0 or len(val) == 0:
        raise UsageError("--train-data and --data must hold samples")
    step = int(args.gate_step) if args.gate_step >= 1 else args.gate_step
    options = dict(init=args.gate_init, epochs=args.gate_epochs, lr=args.gate_lr, l1=args.gate_l1, step=step,
                   train_base=args.train_base, seed=args.seed, fold=True, progress=True,
                   threshold=args.gate_threshold, retrain_epochs=args.gate_retrain_epochs)
    options["loss"] = _loss(train)  # labels the data set marks as void do not count in the training loss
    options["evaluate"] = metric
    if stats is not None:
        options["example_inputs"] = stats.example_inputs(model)
    tol = Tolerance(args.tolerance, relative=args.relative, higher_is_better=args.metric != "loss")
    init = options.pop("init")
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed))
    digest = weights_digest(model)  # of the weights planned on (the gates fold into them)
    plan = gates_plan(model, train_loader, DataLoader(val, batch_size=args.batch_size, shuffle=False), tol, init,
                      **options)
    plan.meta["weights_digest"] = digest
    if stats is not None:
        plan.meta["fingerprint"] = stats.fingerprint
    return plan


def _check_variance(args: argparse.Namespace) -> None:
    """--variance where the method has no use for it is the user's error, not a silent no-op:
    msd_nci counts by its own cut-off (--alpha / --percentile), and lfa's --variance is the tau of
    --factors variance (it implies it; with --factors kaiser or se_scree it would be ignored)."""
    from ..errors import UsageError

    if args.variance is None:
        return
    if args.method == "msd_nci":
        raise UsageError("--variance has no use with --method msd_nci: it prunes the low tail of its score "
                         "distribution (--alpha or --percentile); use pca_nci or lfa for a variance threshold")
    if args.method == "lfa" and args.factors not in (None, "variance"):
        raise UsageError(f"--variance is the tau of --factors variance; with --factors {args.factors} it has no use "
                         "(drop one of them)")
    if args.method == "lfa":
        args.factors = "variance"  # --variance alone implies it


def run(args: argparse.Namespace) -> int:
    from ...planning import compose
    from ...planning import plan as make_plan
    from ...surgery import masked_metric
    from ..errors import UsageError
    from ..plans import check_plan_output, save_plan

    check_plan_output(args, args.out, with_weights=args.method == "gates")
    if args.variance is not None and not 0 < args.variance <= 1:
        raise UsageError(f"--variance {args.variance}: the explained-variance threshold is in (0, 1]")
    if args.alpha is not None and args.alpha < 0 or args.percentile is not None and not 0 <= args.percentile <= 100:
        raise UsageError("need --alpha >= 0 and --percentile in [0, 100]")
    if args.relative and args.tolerance is None:
        raise UsageError("--relative qualifies --tolerance: give --tolerance EPS")
    if args.train_data and args.method != "gates":
        raise UsageError(f"--train-data is for --method gates; --method {args.method} plans from STATS.fps")
    if args.method == "gates":
        _check_gates_args(args)
    _check_variance(args)
    stats, loaded = model_of_stats(args)
    if args.method == "gates":
        plan = _gates_plan(args, stats, loaded.model)
    else:
        opts = rule_options(args)
        if args.tolerance is not None:
            _, metric = _metric(args)
            opts.update(evaluate=masked_metric(loaded.model, metric, stats.example_inputs(loaded.model)),
                        higher_is_better=args.metric != "loss", relative=args.relative)
        try:
            crit, rule, bounds = compose(args.method, **opts)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc).removeprefix("fastprune: ")) from None
        plan = make_plan(loaded.model, stats, crit, rule, bounds=bounds)
    plan.meta.setdefault("method", args.method)
    plan.meta["model"] = loaded.spec.text
    if args.method == "gates":
        plan.meta["data"] = {"train": args.train_data, "val": args.data, "metric": args.metric}
    folded = args.method == "gates" and plan.meta.get("folded", False)
    written = save_plan(plan, args.out, loaded.model if folded else None)
    kept = sum(len(v) for v in plan.keep.values())
    total = sum(plan.channels.values())
    print(f"{args.method}: keeps {kept} of {total} channels in {len(plan.keep)} layers -> "
          f"{' + '.join(str(w) for w in written)}")
    return 0
