"""The main job on the embedded default: synthetic aerial tiles, a small U-Net trained on the CPU,
statistics, plans with pca_nci and lfa, pruning, fine-tuning, evaluation, CPU latency before and
after, the report (report/index.html, summary.json) and a closing table."""
from __future__ import annotations

import argparse

HELP = "run the whole job on synthetic aerial data and write the report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fastprune-demo", metavar="DIR", help="output folder (default ./fastprune-demo): new, empty, or an earlier demo's")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import UsageError
    from ..job import DemoConfig, run_demo

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    run_demo(args.out, DemoConfig(threads=args.threads))
    return 0
