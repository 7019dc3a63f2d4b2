"""The learning-rate schedule as a factor of the base rate.

Torch-free, so that a planner can check a configured schedule without importing torch:
linear warm-up from 1 / warmup_steps, a plateau at 1, then cosine decay to 0 over the
final `decay_fraction` of the steps.
"""

from __future__ import annotations

import math


def decay_start(steps: int, decay_fraction: float) -> int:
    """The first step of the cosine decay."""
    return int(steps * (1 - decay_fraction))


def factor(step: int, steps: int, decay_fraction: float, warmup_steps: int) -> float:
    start = decay_start(steps, decay_fraction)
    if step < start:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, steps - start)))
