"""Streaming statistics of feature maps: mergeable accumulators fed batch by batch."""
