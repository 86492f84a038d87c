"""Model folders the CLI writes and reads back: a plain model (spec + weights) or a pruned one
(spec of the unpruned model + fastprune.save_pruned's file + the plan), so every step replays.

Layout of a folder (marker file `fastprune-model.json`):
  {"format": "fastprune.model", "version": 1, "spec": "unet:base_width=16",
   "weights": "weights.safetensors"}                         # plain
  {..., "pruned": "pruned"}       # pruned: save_pruned's folder (plan.json, edits.json, weights)
plus optional "method", "metrics_before_finetune", "history".
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..planning.plan import Plan
from .errors import UsageError
from .specs import (MODEL_MARKER, ModelSpec, build, factory_for, is_model_dir, load_weights, parse_model_spec,
                    read_model_dir, save_weights)

FORMAT = "fastprune.model"
PRUNED_NAME = "pruned"


class LoadedModel:
    """A model with where it came from: the unpruned SPEC and, if pruned, its plan."""

    def __init__(self, model: nn.Module, spec: ModelSpec, plan: Plan | None = None, doc: dict | None = None):
        self.model, self.spec, self.plan, self.doc = model, spec, plan, doc or {}

    @property
    def pruned(self) -> bool:
        return self.plan is not None


def require_file(path: str | Path, what: str) -> Path:
    """`path` as a Path if it is a file, else the user's error '<what> not found: <path>'."""
    if not Path(path).is_file():
        raise UsageError(f"{what} not found: {path}")
    return Path(path)


def load_stats(path: str | Path):
    """A statistics file written by `fastprune score`."""
    from ..stats.statistics import Statistics

    return Statistics.load(require_file(path, "statistics file"))


def load_model(text: str, weights: str | None = None) -> LoadedModel:
    """Build a model from a SPEC or a model folder; `weights` (a checkpoint) overrides. The
    model comes in eval mode (as `fit` leaves it): tracing, statistics and evaluation see the
    network as it predicts (a classifier's BatchNorm1d cannot run one example in train mode)."""
    if is_model_dir(text):
        folder = Path(text)
        doc = read_model_dir(folder)
        spec = parse_model_spec(doc["spec"])
        plan = None
        if "pruned" in doc:
            from ..surgery import load_pruned

            model = load_pruned(factory_for(spec), folder / doc["pruned"])
            plan = Plan.load(folder / doc["pruned"] / "plan.json")
        else:
            model = build(spec)
            load_weights(model, folder / doc["weights"], f"model {spec.text!r}")
        loaded = LoadedModel(model, spec, plan, doc)
    else:
        if Path(text).exists() and Path(text).is_dir():
            raise UsageError(f"{text} is a folder but not one fastprune wrote (no {MODEL_MARKER})")
        spec = parse_model_spec(text)
        loaded = LoadedModel(build(spec), spec)
    if weights:
        load_weights(loaded.model, weights, f"model {text!r}")
    loaded.model.eval()
    return loaded


def save_model(folder: str | Path, loaded: LoadedModel, **extra: Any) -> Path:
    """Write `loaded` as a model folder (pruned: via fastprune.save_pruned, replayable)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"format": FORMAT, "version": 1, "spec": loaded.spec.text}
    if loaded.plan is not None:
        from ..surgery import save_pruned

        save_pruned(loaded.model, loaded.plan, folder / PRUNED_NAME)
        doc["pruned"] = PRUNED_NAME
        if loaded.plan.meta.get("method"):
            doc["method"] = loaded.plan.meta["method"]
    else:
        save_weights(loaded.model, folder / "weights.safetensors")
        doc["weights"] = "weights.safetensors"
    for k, v in loaded.doc.items():  # keep what earlier steps recorded (method, metrics ...)
        if k not in ("format", "version", "spec", "pruned", "plan", "weights"):
            doc.setdefault(k, v)
    doc.update(extra)
    (folder / MODEL_MARKER).write_text(json.dumps(doc, indent=1, default=str))
    return folder
