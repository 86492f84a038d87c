"""Run a model over data once and save the statistics of every prunable channel group (a .fps
file): score once, plan many — every criterion and threshold works from this file.

While it runs, the statistics are checkpointed every --checkpoint-every batches to
OUT.partial (marked incomplete: `plan` refuses it); an interrupted run continues from there
with --resume (same model, weights, data, batch size and options, else refused)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "collect feature-map statistics (one streaming pass) into a .fps file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..artifacts import add_trust_code

    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint (.safetensors or torch file, weights_only)")
    p.add_argument("--data", required=True, metavar="SPEC", help="data SPEC, e.g. synthetic:n=32,size=64")
    p.add_argument("--out", required=True, metavar="FILE.fps", help="statistics file to write")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.add_argument("--tile", type=int, default=None, help="run on overlapping tile x tile crops (large scenes)")
    p.add_argument("--patch-gram", action="store_true", help="also collect the patch Gram (needed by lasso)")
    p.add_argument("--checkpoint-every", type=int, default=20, metavar="N",
                   help="save the statistics so far to OUT.partial every N batches (default 20)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run that left OUT.partial")
    add_trust_code(p)


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _relative(path: str | None, out: Path) -> str | None:
    """A path the statistics file records, relative to the folder it is written to."""
    return None if path is None else os.path.relpath(Path(path).resolve(), out.resolve().parent)


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from ...stats.statistics import Statistics
    from ..artifacts import load_model
    from ..errors import UsageError
    from ..outputs import check_output
    from ..specs import open_data

    out = Path(args.out)
    if out.suffix != ".fps":
        raise UsageError(f"--out {out}: statistics files end in .fps")
    if args.batch_size < 1 or args.checkpoint_every < 1:
        raise UsageError("--batch-size and --checkpoint-every must be >= 1")
    if args.max_batches is not None and args.max_batches < 1:
        raise UsageError(f"--max-batches {args.max_batches}: at least one batch is needed")
    if args.tile is not None and args.tile < 1:
        raise UsageError(f"--tile {args.tile} must be >= 1")
    check_output(args, out, "statistics")
    partial = partial_path(out)
    check_output(args, partial, "statistics", "--out (its checkpoint)")
    if args.resume and not partial.is_file():
        raise UsageError(f"--resume: no interrupted run to continue ({partial} not found)")
    if partial.exists() and not args.resume:
        partial.unlink()  # an interrupted run's checkpoint (checked above to be a statistics file)
    if args.resume:
        try:
            had = Statistics.load(partial)
        except ValueError as exc:
            raise UsageError(f"{partial}: {str(exc).removeprefix('fastprune: ')}") from None
        if had.complete:
            raise UsageError(f"{partial} holds a finished collection: nothing to resume")
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    data = open_data(args.data, args.batch_size)
    from ...stats.collect import collect

    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    key = {"data": args.data, "max_batches": args.max_batches}
    stats = collect(loaded.model, loader, max_batches=args.max_batches, tile=args.tile, patch_gram=args.patch_gram,
                    checkpoint=partial, checkpoint_every=args.checkpoint_every, resume_key=key)
    stats.meta["model"] = {"spec": loaded.spec.text,
                           "weights": _relative(args.weights, out),
                           "folder": _relative(args.model, out) if Path(args.model).is_dir() else None}
    stats.meta["data"] = args.data
    stats.save(out)
    partial.unlink(missing_ok=True)
    print(f"statistics of {len(stats.groups)} channel groups over {stats.meta.get('samples', '?')} samples -> {out}")
    return 0
