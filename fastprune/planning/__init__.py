"""Planning layer: how many and which channels each group keeps."""
from .plan import Plan

__all__ = ["Plan"]
