"""Plan files the CLI writes and reads: the plan JSON and, when the planner changed the
weights (gates: trained importance weights folded in), those weights beside it.

A plan applies to the weights its tolerance was checked on. For `--method gates` that is
not the input checkpoint but the checkpoint with the gates folded in, so `plan --out
plan.json` also writes `plan.weights.safetensors` and records it in the plan:
  meta["weights"] = {"file": "plan.weights.safetensors", "sha256": "<hex of the file>"}
Whatever applies the plan (`fastprune prune`) loads those weights first; a missing or
changed file is refused, since the plan would then prune a different network.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from .._documents import sha256
from .._files import atomic_write
from ..planning.plan import Plan
from .artifacts import require_file
from .errors import UsageError
from .outputs import check_output, refuse_inputs
from .specs import load_state

WEIGHTS_SUFFIX = ".weights.safetensors"


def weights_path(plan_path: str | Path) -> Path:
    """Where the plan's weights go: plan.json -> plan.weights.safetensors."""
    return Path(plan_path).with_suffix(WEIGHTS_SUFFIX)


def load_plan(path: str | Path) -> Plan:
    """A plan file, or the user's error naming it and the check that failed."""
    try:
        return Plan.load(require_file(path, "plan file"))
    except ValueError as exc:
        raise UsageError(f"{path}: {str(exc).removeprefix('fastprune: ')}") from None


def owned_weights(plan_path: str | Path) -> Path | None:
    """The weights file beside `plan_path` if fastprune wrote it for the plan there: that plan
    records it by name with the sha256 it still has. Anything else is the user's file."""
    path, w = Path(plan_path), weights_path(plan_path)
    if not (path.is_file() and w.is_file()):
        return None
    try:
        rec = Plan.load(path).meta.get("weights")
    except (OSError, ValueError):
        return None
    if isinstance(rec, dict) and rec.get("file") == w.name and rec.get("sha256") == sha256(w.read_bytes()):
        return w
    return None


def check_plan_output(args: argparse.Namespace, path: str | Path, with_weights: bool) -> None:
    """Before planning: `path` may be written (outputs.check_output), and so may the weights file
    beside it when the plan brings weights (only a file fastprune wrote for the plan there)."""
    check_output(args, path, "plan")
    w = weights_path(path)
    if with_weights:
        refuse_inputs(args, w)
        if w.exists() and owned_weights(path) is None:
            raise UsageError(f"{w} exists and fastprune did not write it for the plan {path}: it is left as it "
                             "is (choose another --out)")


def save_plan(plan: Plan, path: str | Path, model: nn.Module | None = None) -> list[Path]:
    """Write `plan` to `path`; with `model`, first its weights (safetensors) beside it, recorded
    with their sha256 in `plan.meta["weights"]`. A weights file fastprune wrote for the plan being
    replaced goes with it when the new plan needs none; any other file is left alone. Returns
    the files written."""
    from safetensors.torch import save

    path = Path(path)
    written = []
    plan.meta.pop("weights", None)
    stale = owned_weights(path)
    if model is not None:
        data = save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})
        wpath = atomic_write(weights_path(path), data)
        written.append(wpath)
        plan.meta["weights"] = {"file": wpath.name, "sha256": sha256(data)}
    plan.save(path)
    if model is None and stale is not None:
        stale.unlink()
    return [path, *written]


def apply_plan_weights(plan: Plan, plan_path: str | Path, model: nn.Module) -> Path | None:
    """Load the weights `plan` records (if any) into `model`, after checking their sha256.

    Returns the weights file, or None for a plan that applies to the model as it is.
    """
    rec = plan.meta.get("weights")
    if rec is None:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("file"), str) or not isinstance(rec.get("sha256"), str) \
            or Path(rec["file"]).name != rec["file"] or not rec["file"]:
        raise UsageError(f"plan {plan_path} records its weights as {rec!r}: expected "
                         "{'file': NAME beside the plan, 'sha256': HEX}")
    wpath = Path(plan_path).parent / rec["file"]
    if not wpath.is_file():
        raise UsageError(f"weights file {wpath} not found: plan {plan_path} was checked on those weights "
                         "(keep the file next to the plan)")
    data = wpath.read_bytes()
    if sha256(data) != rec["sha256"]:
        raise UsageError(f"weights file {wpath} does not match the sha256 recorded in plan {plan_path} "
                         "(changed or replaced since the plan was made)")
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state = load(data)
    except (SafetensorError, ValueError) as exc:
        raise UsageError(f"weights file {wpath} is not a readable safetensors file ({exc})") from None
    load_state(model, state, wpath, "the model the plan is applied to")
    return wpath
