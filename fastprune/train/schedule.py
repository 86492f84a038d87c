"""Learning-rate schedule: linear warm-up then cosine decay, as a LambdaLR factor."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, final: float = 0.01) -> float:
    """Factor of the base lr at ``step`` (0-based): linear 1/warmup .. 1 over ``warmup`` steps,
    then cosine from 1 down to ``final`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p))
