"""The learning-rate schedule: a small pure function, easy to test on its own."""

from __future__ import annotations

import math


def learning_rate(
    step: int, *, peak: float, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from ``peak / warmup_steps`` to ``peak`` over ``warmup_steps``, then
    cosine or linear decay to ``peak * min_ratio`` at ``total_steps``, or constant.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    floor = peak * min_ratio
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    raise ValueError(f"unknown lr_schedule {schedule!r}; expected cosine, linear or constant")
