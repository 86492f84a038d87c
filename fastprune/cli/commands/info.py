"""Versions, what the compiled core was built with, the CPU ISA in use and the CUDA devices."""
from __future__ import annotations

import argparse
import json
import platform

HELP = "versions, build options of the compiled core, CPU ISA, CUDA devices"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def gather() -> dict:
    import numpy
    import torch

    from ... import __version__, build_info

    info = {"fastprune": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    info.update({f"build.{k}": v for k, v in build_info().items()})
    info["torch_cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return info


def run(args: argparse.Namespace) -> int:
    info = gather()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, list):
            v = ", ".join(map(str, v)) or "none"
        print(f"{k:<{width}}  {v}")
    return 0
