"""Save a pruned model as plan JSON + edits JSON + safetensors weights; rebuild it from a factory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file, save_file
from torch import nn

from ..planning.plan import Plan
from .edits import apply_edits
from .prune import EDITS_ATTR

PLAN_FILE = "plan.json"
EDITS_FILE = "edits.json"
WEIGHTS_FILE = "weights.safetensors"


def save_pruned(model: nn.Module, plan: Plan, path: str | Path) -> Path:
    """Write `plan`, the surgery edits and the weights of pruned `model` into folder `path`."""
    if not isinstance(plan, Plan):
        raise TypeError(f"fastprune: plan must be a Plan, got {type(plan).__name__}")
    edits = getattr(model, EDITS_ATTR, None)
    if edits is None:
        raise ValueError("fastprune: this model was not made by fastprune.prune (no surgery record to save)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan.save(path / PLAN_FILE)
    (path / EDITS_FILE).write_text(json.dumps({"format": "fastprune.edits", "version": 1, "edits": edits}))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE))
    return path


def load_pruned(factory: Callable[[], nn.Module], path: str | Path) -> nn.Module:
    """Build `factory()`, apply the saved surgery, load the saved weights."""
    path = Path(path)
    for f in (PLAN_FILE, EDITS_FILE, WEIGHTS_FILE):
        if not (path / f).is_file():
            raise ValueError(f"fastprune: {path} is not a saved pruned model (missing {f})")
    Plan.load(path / PLAN_FILE)  # validates the plan file
    doc = json.loads((path / EDITS_FILE).read_text())
    if doc.get("format") != "fastprune.edits" or doc.get("version") != 1:
        raise ValueError(f"fastprune: {path / EDITS_FILE} is not a fastprune edits file")
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError("fastprune: factory() must return an nn.Module")
    steps = doc["edits"] if isinstance(doc["edits"], list) else [doc["edits"]]
    for e in steps:
        apply_edits(model, e)
    state = load_file(str(path / WEIGHTS_FILE))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"fastprune: saved weights do not fit the rebuilt model ({exc})") from None
    setattr(model, EDITS_ATTR, doc["edits"])
    return model


def saved_plan(path: str | Path) -> Plan:
    """The plan stored with a saved pruned model."""
    return Plan.load(Path(path) / PLAN_FILE)


