"""Where a command may write, checked before the work starts.

An output never equals or contains an input, and never replaces a file or folder fastprune did
not write: an existing output must be the same kind of fastprune artifact (recognised by its
format tag or marker), or an empty folder. Writes themselves are atomic (fastprune._files).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UsageError
from .specs import MODEL_MARKER, is_model_dir

# data SPEC sources that name a path: 'inria:PATH'
_DATA_ARGS = ("data", "val_data", "train_data", "test_data")
_PATH_ARGS = ("model", "weights", "plan", "stats", "pruned")
METRICS_FORMAT = "fastprune.metrics"
DEMO_MARKER = "fastprune-demo.json"  # written first into a demo's output folder


def input_paths(args: argparse.Namespace) -> list[Path]:
    """Files and folders the command line names as inputs (those that exist)."""
    found: list[Path] = []
    for key in _PATH_ARGS + _DATA_ARGS:
        values = getattr(args, key, None)
        for v in values if isinstance(values, list) else [values]:
            if not isinstance(v, str) or not v:
                continue
            cands = [v] + ([v.partition(":")[2]] if key in _DATA_ARGS else [])
            for c in cands:
                if c and Path(c).exists():
                    found.append(Path(c).resolve())
                    if key == "plan":
                        found.append(Path(c).resolve().with_suffix(".weights.safetensors"))
    return found


def refuse_inputs(args: argparse.Namespace, out: str | Path, flag: str = "--out") -> None:
    """UsageError if `out` is, or is a folder containing, an input the command line names."""
    o = Path(out).resolve()
    for p in input_paths(args):
        if o == p or p.is_relative_to(o):
            raise UsageError(f"{flag} {out} {'is' if o == p else 'contains'} the input {p}: "
                             "choose an output that is not an input")


def _is_tagged_json(path: Path, fmt: str) -> bool:
    try:
        doc = json.loads(path.read_bytes()[: 64 << 20])
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == fmt


def _is_statistics(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 64 << 20:
                return False
            header = json.loads(f.read(n))
        return json.loads(header["__metadata__"]["fastprune"]).get("format") == "fastprune.statistics"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return False


# a folder fastprune wrote holds one of these (compare: finished, or still running / interrupted)
_FOLDER_MARKERS = {"model": (MODEL_MARKER,), "report": ("summary.json",),
                   "compare": ("summary.json", "rows.partial.json"), "demo": (DEMO_MARKER,)}


def check_output(args: argparse.Namespace, out: str | Path | None, kind: str, flag: str = "--out") -> Path | None:
    """Refuse `out` before any work: it must not be or contain an input, and an existing one must
    be what fastprune writes there. kind: "statistics", "plan", "metrics" (files), "model",
    "report", "compare", "demo" (folders). `args` may be None (nothing is an input)."""
    if out is None:
        return None
    if not str(out):
        raise UsageError(f"{flag} is empty")
    out = Path(out)
    refuse_inputs(args, out, flag)
    if not out.exists():
        return out
    if kind in _FOLDER_MARKERS:
        if not out.is_dir():
            raise UsageError(f"{flag} {out} exists and is not a folder")
        markers = _FOLDER_MARKERS[kind]
        ours = is_model_dir(out) if kind == "model" else any((out / m).is_file() for m in markers)
        if not ours and any(out.iterdir()):
            raise UsageError(f"{flag} {out} is a folder fastprune did not write (it holds other files and "
                             f"no {' or '.join(markers)}): choose a new or empty folder")
        return out
    ours = {"statistics": _is_statistics, "plan": lambda p: _is_tagged_json(p, "fastprune.plan"),
            "metrics": lambda p: _is_tagged_json(p, METRICS_FORMAT)}[kind](out) if out.is_file() else False
    if not ours:
        raise UsageError(f"{flag} {out} exists and is not a {kind} file fastprune wrote: it is left as it is "
                         "(choose another name)")
    return out
