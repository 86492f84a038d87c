"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint is a folder: ``model.safetensors`` (state dict), ``optimizer.safetensors``
(optimizer state tensors, keyed ``state.<param index>.<name>``), ``state.json`` (optimizer
param groups and non-tensor state, scheduler state, epoch, step, history).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._files import atomic_write


def _tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, best: dict[str, torch.Tensor] | None = None, **state: Any) -> Path:
    """Write a checkpoint folder (files replaced atomically: written under a temp name, renamed);
    `best`: a state dict kept beside it (best.safetensors, see load_best)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    tensors: dict[str, torch.Tensor] = {}
    opt_json: dict[str, Any] = {}
    if optimizer is not None:
        sd = optimizer.state_dict()
        other: dict[str, dict[str, Any]] = {}
        for idx, st in sd["state"].items():
            for name, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"state.{idx}.{name}"] = v
                else:
                    other.setdefault(str(idx), {})[name] = v
        opt_json = {"param_groups": sd["param_groups"], "other": other}
    meta = {"optimizer": opt_json, "scheduler": scheduler.state_dict() if scheduler is not None else None,
            **state}
    files = [("model.safetensors", lambda p: save_file(_tensors(model.state_dict()), p)),
             ("optimizer.safetensors", lambda p: save_file(_tensors(tensors), p))]
    if best is not None:
        files.append((BEST_FILE, lambda p: save_file(_tensors(best), p)))
    files.append(("state.json", lambda p: Path(p).write_text(json.dumps(_json_safe(meta), indent=1))))  # last
    for name, write in files:
        atomic_write(path / name, write)
    return path


BEST_FILE = "best.safetensors"


def load_best(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The best-epoch state dict a checkpoint keeps (None if it keeps none)."""
    f = Path(path) / BEST_FILE
    return load_file(str(f)) if f.is_file() else None


def rng_states(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """The random states a resumed run restores: torch's (CPU and CUDA), Python's, NumPy's and
    the data loader's generator (the data order), as JSON-able lists."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    out = {"torch": torch.get_rng_state().tolist(), "python": [list(random.getstate()[1]), random.getstate()[2]],
           "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    if loader_generator is not None:
        out["loader"] = loader_generator.get_state().tolist()
    return out


def set_rng_states(states: dict[str, Any] | None, loader_generator: torch.Generator | None = None) -> None:
    """Restore what `rng_states` recorded (missing entries are left as they are)."""
    import random

    import numpy as np

    if not states:
        return
    u8 = torch.uint8
    torch.set_rng_state(torch.tensor(states["torch"], dtype=u8))
    random.setstate((3, tuple(states["python"][0]), states["python"][1]))
    np.random.set_state((states["numpy"][0], np.array(states["numpy"][1], dtype=np.uint32), *states["numpy"][2:]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=u8) for s in states["cuda"]])
    if loader_generator is not None and "loader" in states:
        loader_generator.set_state(torch.tensor(states["loader"], dtype=u8))


def has_checkpoint(path: str | os.PathLike) -> bool:
    path = Path(path)
    return all((path / f).is_file() for f in ("model.safetensors", "optimizer.safetensors", "state.json"))


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> dict[str, Any]:
    """Restore model (and optimizer / scheduler) in place; returns the JSON state (epoch, ...)."""
    path = Path(path)
    if not has_checkpoint(path):
        raise ValueError(f"{path}: not a checkpoint folder (needs model.safetensors, "
                         "optimizer.safetensors, state.json)")
    model = getattr(model, "module", model)
    try:
        meta = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - report which file is bad
        raise ValueError(f"{path}: unreadable checkpoint: {e}") from e
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: checkpoint does not fit the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, other shapes {shapes[:5]})")
    model.load_state_dict(weights)
    if optimizer is not None and meta.get("optimizer"):
        flat = load_file(str(path / "optimizer.safetensors"))
        state: dict[int, dict[str, Any]] = {}
        for key, v in flat.items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
        for idx, d in meta["optimizer"].get("other", {}).items():
            state.setdefault(int(idx), {}).update(d)
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    return meta
