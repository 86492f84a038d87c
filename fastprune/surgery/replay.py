"""Save a pruned model as plan JSON + edits JSON + safetensors weights; rebuild it from a factory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from .._documents import check_seal, check_tag, read_json, seal, sha256
from .._files import atomic_write
from ..planning.plan import Plan
from .edits import apply_edits
from .prune import EDITS_ATTR

PLAN_FILE = "plan.json"
EDITS_FILE = "edits.json"
WEIGHTS_FILE = "weights.safetensors"
EDITS_FORMAT = "fastprune.edits"


def save_pruned(model: nn.Module, plan: Plan, path: str | Path) -> Path:
    """Write `plan`, the surgery edits and the weights of pruned `model` into folder `path`."""
    if not isinstance(plan, Plan):
        raise TypeError(f"fastprune: plan must be a Plan, got {type(plan).__name__}")
    edits = getattr(model, EDITS_ATTR, None)
    if edits is None:
        raise ValueError("fastprune: this model was not made by fastprune.prune (no surgery record to save)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan_text = plan.to_json()
    weights = save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})
    doc = seal({"format": EDITS_FORMAT, "version": 1, "edits": edits,
                "files": {PLAN_FILE: sha256(plan_text.encode()), WEIGHTS_FILE: sha256(weights)}})
    atomic_write(path / WEIGHTS_FILE, weights)
    atomic_write(path / PLAN_FILE, plan_text)
    atomic_write(path / EDITS_FILE, json.dumps(doc))  # last: it vouches for the other two
    return path


def read_pruned(path: str | Path) -> tuple[Plan, Any, dict]:
    """The plan, the surgery edits (one step or a list of steps) and the weights of a folder written by `save_pruned`, each
    checked (edits.json's checksum, and the sha256 it records of plan.json and the weights);
    ValueError naming the file and the check that failed."""
    path = Path(path)
    for f in (PLAN_FILE, EDITS_FILE, WEIGHTS_FILE):
        if not (path / f).is_file():
            raise ValueError(f"fastprune: {path} is not a saved pruned model (missing {f})")
    noun = f"edits file {path / EDITS_FILE}"
    doc = read_json((path / EDITS_FILE).read_bytes(), noun)
    check_tag(doc, EDITS_FORMAT, 1, noun, "edits")
    check_seal(doc, noun)
    files = doc.get("files")
    data = {}
    for f in (PLAN_FILE, WEIGHTS_FILE):
        data[f] = (path / f).read_bytes()
        if not isinstance(files, dict) or files.get(f) != sha256(data[f]):
            raise ValueError(f"fastprune: {path / f} does not match the sha256 recorded in {path / EDITS_FILE} "
                             "(changed, truncated or replaced after it was saved)")
    plan = Plan.from_json(data[PLAN_FILE])
    try:
        state = load(data[WEIGHTS_FILE])
    except (SafetensorError, ValueError) as exc:
        raise ValueError(f"fastprune: {path / WEIGHTS_FILE} is not a readable safetensors file ({exc})") from None
    return plan, doc["edits"], state


def load_pruned(factory: Callable[[], nn.Module], path: str | Path) -> nn.Module:
    """Build `factory()`, apply the saved surgery, load the saved weights (all checked first)."""
    _, edits, state = read_pruned(path)
    steps = edits if isinstance(edits, list) else [edits]
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError("fastprune: factory() must return an nn.Module")
    for e in steps:
        apply_edits(model, e)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"fastprune: saved weights do not fit the rebuilt model ({str(exc)[:300]})") from None
    setattr(model, EDITS_ATTR, edits)
    return model


def saved_plan(path: str | Path) -> Plan:
    """The plan stored with a saved pruned model (checked like `load_pruned` checks it)."""
    return read_pruned(path)[0]


