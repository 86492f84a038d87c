"""Streaming statistics: accumulators, the hooks that feed them, merge, save/load."""
