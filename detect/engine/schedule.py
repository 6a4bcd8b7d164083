"""Learning-rate schedules: linear warm-up, then cosine decay or steps."""

from __future__ import annotations

import math

from detect.config import TrainConfig


def lr_factor(iteration: int, total_iterations: int, iterations_per_epoch: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at ``iteration`` (0-based).

    Warm-up: linear from ``warmup_factor`` to 1 over ``warmup_iters``. Then ``cosine``:
    ``½ (1 + cos(π t / T))`` over the whole run, or ``step``: ``gamma ** (#milestones passed)``
    with milestones in epochs.
    """
    if config.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(iteration, total_iterations) / max(total_iterations, 1)))
    else:
        epoch = iteration / max(iterations_per_epoch, 1)
        factor = config.gamma ** sum(epoch >= milestone for milestone in config.milestones)
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        factor *= config.warmup_factor * (1.0 - alpha) + alpha
    return factor
