"""Remove the deepest levels of a U-Net whose channels the statistics judge redundant (layer
pruning, a planning step): each level's redundancy is the channel-weighted 1 - k/C of its
layers, k the PCA components reaching --tau; levels go from the deepest while it reaches
--threshold. Writes a model folder of the shallower U-Net (the kept levels' weights); score it
again before planning its channels."""
from __future__ import annotations

import argparse

from ..argtypes import finite_float

HELP = "remove redundant depth levels of a U-Net (layer pruning); writes a model folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..artifacts import add_trust_code

    p.add_argument("stats", metavar="STATS.fps", help="statistics file written by `fastprune score`")
    p.add_argument("--threshold", type=finite_float, default=0.75,
                   help="remove a level while its redundancy reaches this (default 0.75)")
    p.add_argument("--tau", type=finite_float, default=0.95, help="explained variance of the PCA count (default 0.95)")
    p.add_argument("--min-depth", type=int, default=1, help="levels that always stay (default 1)")
    p.add_argument("--model", metavar="SPEC", help="model SPEC (default: the one recorded in the statistics)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint (default: the one recorded in the statistics)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the shallower model")
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    from ...models.unet import UNet, level_layers, remove_levels
    from ...planning.depth import levels_to_remove
    from ..artifacts import LoadedModel, save_model
    from ..errors import UsageError
    from ..specs import parse_model_spec
    from .plan import model_of_stats

    if args.min_depth < 0:
        raise UsageError("--min-depth must be >= 0")
    stats, loaded = model_of_stats(args)
    model = loaded.model
    if not isinstance(model, UNet) or loaded.pruned:
        raise UsageError("levels removes depth levels of an unpruned built-in U-Net (--model unet:...)")
    try:
        n, scores = levels_to_remove(model, stats, level_layers(model), args.threshold, args.tau, args.min_depth)
    except ValueError as exc:
        raise UsageError(str(exc).removeprefix("fastprune: ")) from None
    options = {**loaded.spec.options, "depth": model.depth - n}
    spec = parse_model_spec("unet:" + ",".join(f"{k}={v}" for k, v in options.items()))
    save_model(args.out, LoadedModel(remove_levels(model, n), spec))
    shown = ", ".join(f"level {d}: {100 * r:.0f}%" for d, r in sorted(scores.items()))
    print(f"levels: removes {n} of {model.depth} levels (redundancy {shown}; threshold "
          f"{100 * args.threshold:.0f}%) -> {args.out} ({spec.text})")
    return 0
