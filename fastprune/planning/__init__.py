"""Planning layer: how many and which channels each group keeps."""
from .plan import Plan
from .planner import plan

__all__ = ["Plan", "plan"]
