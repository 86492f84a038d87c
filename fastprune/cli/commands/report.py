"""report (being written)."""
from __future__ import annotations

import argparse

HELP = "report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("fastprune report is not written yet")
