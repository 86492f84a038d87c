"""argparse value types shared by the commands (no torch import: `--help` stays fast)."""
from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """A finite number; 'nan', 'inf' and non-numbers are argparse errors (one line, exit code 2)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v
