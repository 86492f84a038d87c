"""demo (being written)."""
from __future__ import annotations

import argparse

HELP = "demo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("fastprune demo is not written yet")
