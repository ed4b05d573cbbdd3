"""Learning-rate schedules of a training run, as ``torch.optim.lr_scheduler.LambdaLR`` multipliers.

``constant``: lr_t = eta.  ``warmup_cosine``: a linear warmup over ``warmup`` updates, then a cosine
decay to ``final_ratio * eta`` at the last update T:

    lr_t / eta = (t + 1) / warmup                                             for t < warmup,
    lr_t / eta = r + (1 - r) (1 + cos(pi (t - warmup) / (T - warmup))) / 2     for t >= warmup,

where t counts the updates already taken (lr_t is the rate of update t + 1) and r = ``final_ratio``.
The multiplier is a picklable object, so the scheduler's state goes into checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .names import SCHEDULES  # noqa: F401  (the names this module implements)


@dataclass(frozen=True)
class WarmupCosine:
    """lr multiplier of ``warmup_cosine`` (module docstring); ``total`` is T, the number of updates."""

    warmup: int
    total: int
    final_ratio: float

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return (t + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        progress = min(max(t - self.warmup, 0), span) / span
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, total: int, warmup: int = 0,
                    final_ratio: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler called ``name`` (None for ``constant``) over ``total`` updates."""
    if name == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, final_ratio))
