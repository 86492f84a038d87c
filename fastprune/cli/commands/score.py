"""Run a model over data once and save the statistics of every prunable channel group (a .fps
file): score once, plan many — every criterion and threshold works from this file."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "collect feature-map statistics (one streaming pass) into a .fps file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint (.safetensors or torch file, weights_only)")
    p.add_argument("--data", required=True, metavar="SPEC", help="data SPEC, e.g. synthetic:n=32,size=64")
    p.add_argument("--out", required=True, metavar="FILE.fps", help="statistics file to write")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.add_argument("--tile", type=int, default=None, help="run on overlapping tile x tile crops (large scenes)")
    p.add_argument("--patch-gram", action="store_true", help="also collect the patch Gram (needed by lasso)")


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from ..artifacts import load_model
    from ..errors import UsageError
    from ..specs import open_data

    out = Path(args.out)
    if out.suffix != ".fps":
        raise UsageError(f"--out {out}: statistics files end in .fps")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    loaded = load_model(args.model, args.weights)
    data = open_data(args.data)
    from ...stats.collect import collect

    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    stats = collect(loaded.model, loader, max_batches=args.max_batches, tile=args.tile,
                    patch_gram=args.patch_gram)
    stats.meta["model"] = {"spec": args.model if loaded.pruned else loaded.spec.text,
                           "weights": str(Path(args.weights).resolve()) if args.weights else None,
                           "folder": str(Path(args.model).resolve()) if Path(args.model).is_dir() else None}
    stats.meta["data"] = args.data
    out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(out)
    print(f"statistics of {len(stats.groups)} channel groups over {stats.meta.get('samples', '?')} samples -> {out}")
    return 0
