"""Dependency graph: which output channels of which modules must be removed together."""
from .graph import ChannelGroup, DependencyGraph, Member

__all__ = ["ChannelGroup", "DependencyGraph", "Member"]
