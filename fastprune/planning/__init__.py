"""Planning layer: how many and which channels each group keeps.

`plan(model, stats, criterion, rule, bounds=Bounds(...))` with a rule object (`Variance`,
`Ratio`, `Budget`, `Tolerance`, `Own`); `compose(method, **keywords)` builds the three from
keyword options.
"""
from .keywords import compose
from .plan import Plan
from .planner import plan
from .rules import ALLOCATIONS, Bounds, Budget, Own, Ratio, Variance
from .tolerance import Tolerance

__all__ = ["ALLOCATIONS", "Bounds", "Budget", "Own", "Plan", "Ratio", "Tolerance", "Variance", "compose", "plan"]
