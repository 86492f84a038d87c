"""Streaming statistics of feature maps: mergeable accumulators fed batch by batch, the hooks
that feed them (collect), merge, save/load."""
