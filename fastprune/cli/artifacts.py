"""Model folders the CLI writes and reads back: a plain model (spec + weights) or a pruned one
(spec of the unpruned model + fastprune.save_pruned's folder + the plan), so every step replays.

Layout of a folder (marker file `fastprune-model.json`):
  {"format": "fastprune.model", "version": 1, "spec": "unet:base_width=16",
   "weights": "weights.safetensors", "files": {"weights.safetensors": SHA256},
   "weights_digest": DIGEST, "fingerprint": FP, "fingerprint_input": [1, 3, 64, 64],
   "checksum": ...}                                               # plain
  {..., "pruned": "pruned", "files": {"pruned/edits.json": SHA256}}  # pruned: save_pruned's folder
plus optional "method", "metrics_before_finetune", "history".

Loading checks, and names the check that failed: the format tag and version, the marker's
checksum, that "weights"/"pruned" are names inside the folder, the sha256 of every file it
lists, the SPEC (a built-in model; a factory only with --trust-code: a file never names code to
import) and the digest of the weights loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .._documents import check_seal, check_tag, plain, read_json, seal, sha256, weights_digest
from .._files import atomic_write
from ..planning.plan import Plan
from .errors import UsageError
from .specs import (MODEL_MARKER, ModelSpec, build, example_input, factory_for, is_model_dir, load_weights,
                    parse_model_spec, save_weights)

FORMAT = "fastprune.model"
VERSION = 1
PRUNED_NAME = "pruned"
WEIGHTS_NAME = "weights.safetensors"
_OWN_KEYS = ("format", "version", "spec", "pruned", "plan", "weights", "files", "weights_digest", "fingerprint",
             "fingerprint_input", "checksum")


class LoadedModel:
    """A model with where it came from: the unpruned SPEC and, if pruned, its plan."""

    def __init__(self, model: nn.Module, spec: ModelSpec, plan: Plan | None = None, doc: dict | None = None):
        self.model, self.spec, self.plan, self.doc = model, spec, plan, doc or {}

    @property
    def pruned(self) -> bool:
        return self.plan is not None


def add_trust_code(p) -> None:
    """The --trust-code flag of every command that opens model folders or statistics files."""
    p.add_argument("--trust-code", action="store_true",
                   help="allow a model folder or statistics file to name your own model factory "
                        "(package.module:factory), which is then imported and called; never needed for "
                        "built-in models. Check the file and the code first")


def require_file(path: str | Path, what: str) -> Path:
    """`path` as a Path if it is a file, else the user's error '<what> not found: <path>'."""
    if not str(path) or not Path(path).is_file():
        raise UsageError(f"{what} not found: {path!r}")
    return Path(path)


def load_stats(path: str | Path):
    """A statistics file written by `fastprune score` (checked: format, checksum, content)."""
    from ..stats.statistics import Statistics

    try:
        return Statistics.load(require_file(path, "statistics file"))
    except ValueError as exc:
        raise UsageError(f"{path}: {str(exc).removeprefix('fastprune: ')}") from None


def _inside(folder: Path, name: Any, key: str, marker: Path) -> Path:
    """folder/name for a plain file or folder name recorded in `marker` (no path may leave it)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise UsageError(f"{marker}: '{key}' must name a file inside the folder, got {str(name)[:80]!r}")
    return folder / name


def read_model_dir(folder: str | Path) -> dict[str, Any]:
    """The checked description of a model folder (format, version, checksum, confined paths,
    sha256 of the files it lists)."""
    folder = Path(folder)
    marker = folder / MODEL_MARKER
    try:
        doc = read_json(marker.read_bytes(), f"model description {marker}")
        check_tag(doc, FORMAT, VERSION, "model folder description", "model folder")
        check_seal(doc, f"model description {marker}")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{marker}: {str(exc).removeprefix('fastprune: ')}") from None
    if ("pruned" in doc) == ("weights" in doc):
        raise UsageError(f"{marker} must name either its weights or its pruned model")
    files = doc.get("files")
    if not isinstance(files, dict) or not files:
        raise UsageError(f"{marker} lists no files with their sha256")
    for rel, digest in files.items():
        parts = Path(str(rel)).parts
        if not parts or any(p in ("..", "") for p in parts) or Path(str(rel)).is_absolute():
            raise UsageError(f"{marker} lists a file outside the folder: {str(rel)[:80]!r}")
        path = folder / rel
        if not path.is_file():
            raise UsageError(f"{path} (listed in {marker}) not found")
        if sha256(path.read_bytes()) != digest:
            raise UsageError(f"{path} does not match the sha256 recorded in {marker} "
                             "(changed, truncated or replaced after fastprune wrote it)")
    return doc


def _fingerprint(model: nn.Module, shape: Any) -> str | None:
    """The dependency graph's fingerprint of `model` traced on zeros of `shape` in eval mode (a
    classifier's BatchNorm1d cannot run one example in train mode; None if it does not trace)."""
    import torch

    from ..graph import DependencyGraph

    if not isinstance(shape, list) or len(shape) != 4 or not all(type(d) is int and 1 <= d <= 4096 for d in shape):
        return None
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return DependencyGraph(model, torch.zeros(shape)).fingerprint()
    except (RuntimeError, ValueError, TypeError):
        return None
    finally:
        model.train(was)


def load_model(text: str, weights: str | None = None, trust_code: bool = False,
               source: str | Path | None = None) -> LoadedModel:
    """Build a model from a SPEC or a model folder; `weights` (a checkpoint) overrides.
    `source`: the file `text` was read from (else the user typed it). A SPEC from a file (a
    folder's, or `source`) may name a user factory only with `trust_code` (specs.parse_model_spec).
    The model comes in eval mode (as `fit` leaves it): tracing, statistics and evaluation see
    the network as it predicts (a classifier's BatchNorm1d cannot run one example in train mode)."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("--model is empty: give a SPEC (e.g. unet:base_width=16) or a model folder")
    if is_model_dir(text):
        folder = Path(text)
        doc = read_model_dir(folder)
        marker = folder / MODEL_MARKER
        spec = parse_model_spec(doc.get("spec"), source=marker, trust_code=trust_code)
        plan = None
        if "pruned" in doc:
            from ..surgery.replay import load_pruned, saved_plan

            pruned = _inside(folder, doc["pruned"], "pruned", marker)
            try:
                model = load_pruned(factory_for(spec), pruned)
                plan = saved_plan(pruned)
            except ValueError as exc:
                raise UsageError(f"{pruned}: {str(exc).removeprefix('fastprune: ')}") from None
        else:
            model = build(spec)
            load_weights(model, _inside(folder, doc["weights"], "weights", marker), f"model {spec.text!r}")
        if doc.get("weights_digest") != weights_digest(model):
            raise UsageError(f"{folder}: the weights loaded do not have the digest recorded in {marker}")
        if "fingerprint" in doc and doc["fingerprint"] != _fingerprint(model, doc.get("fingerprint_input")):
            raise UsageError(f"{folder}: the model built from {marker} has another structure (graph fingerprint) "
                             "than the one saved")
        loaded = LoadedModel(model, spec, plan, doc)
    else:
        if Path(text).exists() and Path(text).is_dir():
            raise UsageError(f"{text} is a folder but not one fastprune wrote (no {MODEL_MARKER})")
        spec = parse_model_spec(text, source=source, trust_code=trust_code)
        loaded = LoadedModel(build(spec), spec)
    if weights:
        load_weights(loaded.model, weights, f"model {text!r}")
    loaded.model.eval()
    return loaded


def save_model(folder: str | Path, loaded: LoadedModel, **extra: Any) -> Path:
    """Write `loaded` as a model folder (pruned: via fastprune.save_pruned, replayable); the
    description is written last, so a folder is only a model folder once it is whole."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "spec": loaded.spec.text}
    if loaded.plan is not None:
        from ..surgery import save_pruned
        from ..surgery.replay import EDITS_FILE

        save_pruned(loaded.model, loaded.plan, folder / PRUNED_NAME)
        doc["pruned"] = PRUNED_NAME
        listed = f"{PRUNED_NAME}/{EDITS_FILE}"  # it records the sha256 of the plan and weights beside it
        if loaded.plan.meta.get("method"):
            doc["method"] = loaded.plan.meta["method"]
    else:
        save_weights(loaded.model, folder / WEIGHTS_NAME)
        doc["weights"] = listed = WEIGHTS_NAME
    doc["files"] = {listed: sha256((folder / listed).read_bytes())}
    doc["weights_digest"] = weights_digest(loaded.model)
    shape = list(example_input(loaded.model).shape)
    fp = _fingerprint(loaded.model, shape)
    if fp is not None:
        doc["fingerprint"], doc["fingerprint_input"] = fp, shape
    for k, v in loaded.doc.items():  # keep what earlier steps recorded (method, metrics ...)
        if k not in _OWN_KEYS:
            doc.setdefault(k, v)
    doc.update(extra)
    atomic_write(folder / MODEL_MARKER, json.dumps(seal(plain(doc)), indent=1, allow_nan=False))
    return folder
