"""Learned importance weights with an error tolerance (Sawant et al., Applied Sciences 2022).

`prune_with_gates` runs the whole method on a copy of the model: attach gates, train them,
raise the |gate| threshold while the validation loss (or metric) stays within ε, fold the
gates into the weights, remove the masked filters by surgery, fine-tune. `gates_plan`
stops after the loop and returns the `Plan` (the `method="gates"` entry point).
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ...planning.plan import Plan
from ...planning.tolerance import Tolerance
from .attach import Gates
from .fit import EvalFn, LossFn, check_data, finetune, train_gates, validation_value
from .init import INITS
from .select import Selection, select_by_gates


def _tolerance(tolerance: Tolerance | float) -> Tolerance:
    if isinstance(tolerance, Tolerance):
        return tolerance
    return Tolerance(tolerance)  # a bare number: an absolute loss tolerance (validated there)


def _example_inputs(data: Iterable) -> Any:
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("fastprune: each batch must be an (inputs, targets) pair")
        return batch[0]
    raise ValueError("fastprune: the training set is empty")


def _out_channels(module: nn.Module, kind: str) -> int:
    for attr in ("out_channels", "out_features", "num_features", "num_channels"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return int(module.weight.shape[1 if kind == "conv_transpose" else 0])


def _groups_and_mask(model: nn.Module, example_inputs: Any, groups: Sequence[Any] | None):
    """Channel groups (given, or from the dependency graph) and, with the graph, surgery's exact masking."""
    if groups is not None:
        return groups, None
    from ...graph import DependencyGraph  # the graph layer sits below train; imported when needed
    from ...surgery import masked

    graph = DependencyGraph(model, example_inputs)
    return graph.groups, lambda removal: masked(model, removal, example_inputs, graph=graph)


def _build_plan(model: nn.Module, gates: Gates, sel: Selection, tol: Tolerance, baseline: float,
                gated_value: float, init: str, folded: bool, threshold: str, retrain_epochs: int) -> Plan:
    mods = dict(model.named_modules())
    keep: dict[str, list[int]] = {}
    channels: dict[str, int] = {}
    layers: dict[str, dict[str, Any]] = {}
    removal = gates.removal()
    scores = gates.scores(threshold == "layer")
    for slot, g in enumerate(gates.groups):
        for p in g.producers:
            n = _out_channels(mods[p.module], p.kind)
            channels[p.module] = n
            gone = set(removal.get(p.module, ()))
            keep[p.module] = [i for i in range(n) if i not in gone]
            layers[p.module] = {"group": getattr(g, "id", slot), "gate": [float(v) for v in gates.weights[slot].detach()],
                                "score": [float(v) for v in scores[slot]], "removed": sorted(gone)}
    meta = {"method": "gates", "init": init, "tolerance": tol.to_dict(), "baseline": baseline,
            "gated_unpruned": gated_value, "steps": sel.counts, "values": sel.values,
            "thresholds": sel.thresholds, "pruned_channels": sel.pruned, "selected_value": sel.value,
            "folded": folded, "threshold": threshold, "retrain_epochs": retrain_epochs}
    return Plan(keep=keep, channels=channels, layers=layers, meta=meta)


def _run(model: nn.Module, train_data: Iterable, val_data: Iterable, tolerance: Tolerance | float, init: str,
         loss: LossFn | None, evaluate: EvalFn | None, groups: Sequence[Any] | None, example_inputs: Any,
         epochs: int, lr: float, l1: float, train_base: bool, base_lr: float, step: int | float, min_keep: int,
         seed: int, progress: bool, threshold: str = "global",
         retrain_epochs: int = 0) -> tuple[Gates, Selection, float, float, Any]:
    tol = _tolerance(tolerance)
    if init not in INITS:
        raise ValueError(f"fastprune: unknown gate initialisation {init!r}; expected one of {INITS}")
    if isinstance(retrain_epochs, bool) or not isinstance(retrain_epochs, int) or retrain_epochs < 0:
        raise ValueError(f"fastprune: retrain_epochs must be a whole number >= 0, got {retrain_epochs!r}")
    check_data(train_data, "train_data")
    check_data(val_data, "val_data")
    if example_inputs is None:
        example_inputs = _example_inputs(train_data)
    loss = loss or F.cross_entropy
    baseline = validation_value(model, val_data, loss, evaluate)
    groups, mask = _groups_and_mask(model, example_inputs, groups)
    gates = Gates(model, groups, example_inputs, init, torch.Generator().manual_seed(seed))
    try:
        train_gates(model, gates, train_data, loss, epochs=epochs, lr=lr, l1=l1, train_base=train_base,
                    base_lr=base_lr, progress=progress)
        gated_value = validation_value(model, val_data, loss, evaluate)

        def retrain() -> None:  # between pruning steps, with the step's channels masked
            train_gates(model, gates, train_data, loss, epochs=retrain_epochs, lr=lr, l1=l1, train_base=train_base,
                        base_lr=base_lr, progress=False)

        sel = select_by_gates(gates, lambda: validation_value(model, val_data, loss, evaluate), baseline, tol,
                              step=step, min_keep=min_keep, progress=progress, mask=mask, threshold=threshold,
                              retrain=retrain if retrain_epochs else None)
    except BaseException:
        gates.detach()
        raise
    return gates, sel, baseline, gated_value, example_inputs


def prune_with_gates(model: nn.Module, train_data: Iterable, val_data: Iterable, tolerance: Tolerance | float,
                     init: str = "ones", *, loss: LossFn | None = None, evaluate: EvalFn | None = None,
                     groups: Sequence[Any] | None = None, example_inputs: Any = None, epochs: int = 10,
                     lr: float = 0.05, l1: float = 1e-3, train_base: bool = False, base_lr: float = 1e-3,
                     step: int | float = 0.02, min_keep: int = 1, threshold: str = "global", retrain_epochs: int = 0,
                     finetune_epochs: int = 5, finetune_lr: float = 1e-3, seed: int = 0,
                     progress: bool = True) -> tuple[nn.Module, Plan, dict[str, Any]]:
    """Prune `model` as far as `tolerance` allows, by learned importance weights; the input model is untouched.

    `tolerance`: a `Tolerance` (absolute/relative ε on the loss, or on a metric with
    `higher_is_better=True` and an `evaluate(model) -> float` callable, e.g.
    `lambda m: fastprune.train.evaluate(m, val_dataset)["miou"]`) or a bare ε for an
    absolute loss tolerance. Data are re-iterable collections of (inputs, targets) batches;
    `loss(outputs, targets)` defaults to cross-entropy. `step`: channels masked per step (int) or fraction of the
    prunable channels (float). `threshold`: "global" (one threshold on |gate|) or "layer"
    (|gate| over each group's initial gate RMS); `retrain_epochs` > 0 trains the gates (and
    with `train_base` the model) that many epochs between pruning steps. The pruned model is
    fine-tuned `finetune_epochs` (as `fastprune finetune`'s default, 5) keeping the best
    validation epoch. Returns (pruned and fine-tuned model, Plan, report) where the
    report holds the baseline, the value the loop measured for the selected candidate
    (`selected`, None if nothing was within tolerance), the value of the pruned model before
    (`pruned`) and after (`final`) fine-tuning, and the loop's measurements.
    """
    work = copy.deepcopy(model)
    gates, sel, baseline, gated_value, example_inputs = _run(
        work, train_data, val_data, tolerance, init, loss, evaluate, groups, example_inputs, epochs, lr, l1,
        train_base, base_lr, step, min_keep, seed, progress, threshold, retrain_epochs)
    tol = _tolerance(tolerance)
    plan = _build_plan(work, gates, sel, tol, baseline, gated_value, init, sel.pruned > 0, threshold, retrain_epochs)
    removal = gates.removal()
    if sel.pruned == 0:  # no candidate within tolerance: the last model within it is the original
        gates.detach()
        work = copy.deepcopy(model)
    else:
        gates.fold()
    if removal:
        from ...surgery import prune

        work = prune(work, removal, example_inputs)
    loss_fn = loss or F.cross_entropy
    pruned_value = validation_value(work, val_data, loss_fn, evaluate)
    final, history = finetune(work, train_data, val_data, loss_fn, epochs=finetune_epochs, lr=finetune_lr,
                              evaluate=evaluate, higher_is_better=tol.higher_is_better, progress=progress)
    report = {"baseline": baseline, "gated_unpruned": gated_value, "selected": sel.value, "pruned": pruned_value,
              "final": final,
              "within_tolerance": tol.within(baseline, final), "removal": removal, "steps": sel.counts,
              "values": sel.values, "thresholds": sel.thresholds, "finetune": history}
    return work, plan, report


def gates_plan(model: nn.Module, train_data: Iterable, val_data: Iterable, tolerance: Tolerance | float,
               init: str = "ones", *, fold: bool = False, **kwargs: Any) -> Plan:
    """The `method="gates"` planner: train gates and run the tolerance loop, return the Plan.

    With frozen base weights the tolerance was checked on the gated model, so applying the
    plan to the unchanged model gives a different (unscaled) network; `fold=True` folds the
    trained gates into `model`'s weights in place (channels stay; masked ones become exactly
    zero) so that `fastprune.prune(model, plan, ...)` reproduces the checked model. Other
    keyword arguments are those of `prune_with_gates` up to the loop.
    """
    allowed = {"loss", "evaluate", "groups", "example_inputs", "epochs", "lr", "l1", "train_base", "base_lr",
               "step", "min_keep", "seed", "progress", "threshold", "retrain_epochs"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"fastprune: gates_plan got unexpected arguments {sorted(unknown)}")
    defaults = {"loss": None, "evaluate": None, "groups": None, "example_inputs": None, "epochs": 10, "lr": 0.05,
                "l1": 1e-3, "train_base": False, "base_lr": 1e-3, "step": 0.02, "min_keep": 1, "seed": 0,
                "progress": True, "threshold": "global", "retrain_epochs": 0}
    defaults.update(kwargs)
    target = copy.deepcopy(model)  # `model` changes only once everything succeeded
    gates, sel, baseline, gated_value, _ = _run(target, train_data, val_data, tolerance, init, **defaults)
    fold = fold and sel.pruned > 0  # with nothing within tolerance the model stays as it was
    plan = _build_plan(target, gates, sel, _tolerance(tolerance), baseline, gated_value, init, fold,
                       defaults["threshold"], defaults["retrain_epochs"])
    gates.fold()
    if fold:
        model.load_state_dict(target.state_dict())
    return plan
