"""Learned importance weights (gates) with an error tolerance — see `api` for the method."""
from .api import gates_plan, prune_with_gates
from .attach import NORM_KINDS, Gates
from .fit import finetune, train_gates, validation_value
from .init import INITS, init_gates, logistic_map
from .select import Selection, pruning_order, select_by_gates, step_counts

__all__ = ["Gates", "INITS", "NORM_KINDS", "Selection", "finetune", "gates_plan", "init_gates", "logistic_map",
           "prune_with_gates", "pruning_order", "select_by_gates", "step_counts", "train_gates", "validation_value"]
