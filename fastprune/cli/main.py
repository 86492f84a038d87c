"""Entry point of the `fastprune` command: argument parsing and the one place errors are reported."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .errors import UsageError, one_line

# (command, module under fastprune.cli.commands); the order is the order of `fastprune --help`
COMMANDS = ("info", "score", "plan", "levels", "prune", "finetune", "evaluate", "report", "compress", "compare", "bench", "demo")

# What a user can cause: bad arguments, files, specs, values; what is not built yet.
# FloatingPointError: training diverged (the learning rate asked for) or the data hold NaN/inf
USER_ERRORS = (UsageError, ValueError, TypeError, OSError, NotImplementedError, KeyError, FloatingPointError)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit code 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    import importlib

    parser = Parser(
        prog="fastprune",
        description="Data-driven filter pruning for convolutional (segmentation) networks. "
        "Score once (statistics of real feature maps), plan many (any criterion, any threshold), "
        "prune physically, fine-tune, evaluate, report.",
        epilog="Model SPEC: a built-in name with options (unet:base_width=16,depth=3; segnet; deeplabv3plus; "
        "ternausnet; vgg16), package.module:factory[:key=value,...] for your own model, or a folder "
        "written by `fastprune prune`/`fastprune finetune`. Data SPEC: synthetic[:options], inria:PATH, "
        "airs:PATH, camvid:PATH. Set FASTPRUNE_DEBUG=1 to see tracebacks.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"fastprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"fastprune.cli.commands.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line on stderr and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines reach a log file as they are printed
        sys.stdout.reconfigure(line_buffering=True)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        hint = "; rerun the same command with --resume to continue" if getattr(args, "resume", None) is not None else ""
        print(f"fastprune {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except ImportError as exc:  # a part of fastprune this build lacks (ModuleNotFoundError included)
        if not (exc.name or "").startswith("fastprune") or os.environ.get("FASTPRUNE_DEBUG"):
            raise
        print(f"fastprune {args.command}: error: not implemented in this build: {one_line(exc)}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        if os.environ.get("FASTPRUNE_DEBUG"):
            raise
        print(f"fastprune {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not the user's doing: still one line, different code
        if os.environ.get("FASTPRUNE_DEBUG"):
            raise
        print(f"fastprune {args.command}: internal error: {type(exc).__name__}: {one_line(exc)} "
              "(set FASTPRUNE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
