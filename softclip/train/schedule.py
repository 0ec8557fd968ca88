"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio`` of the peak.

The rate is a pure function of the optimiser step, so resuming needs only the step (the checkpoint still
stores the schedule's parameters, and resuming checks they match).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


def cosine_lr(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """The learning rate of optimiser step ``step`` (0-based: the step about to be taken).

    Warmup: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first step moves).
    Then cosine from ``base_lr`` (at ``step == warmup_steps``) towards ``min_lr_ratio * base_lr``, reached at
    ``step == total_steps`` (open_clip's convention: the last step still moves) and held beyond.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class CosineSchedule:
    """Sets every param group's ``lr`` for a step (groups may carry an ``lr_scale``, default 1).

    Attributes:
        base_lr, warmup_steps, total_steps, min_lr_ratio: see :func:`cosine_lr`.
        last_lr: the rate set by the latest :meth:`apply`.
    """

    base_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0
    last_lr: float = 0.0

    def lr(self, step: int) -> float:
        return cosine_lr(step, self.base_lr, self.warmup_steps, self.total_steps, self.min_lr_ratio)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the rate of step ``step`` on ``optimizer``; returns it."""
        self.last_lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = self.last_lr * group.get("lr_scale", 1.0)
        return self.last_lr

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``last_lr``; the shape of the schedule must match (it comes from the config)."""
        mine = {k: v for k, v in asdict(self).items() if k != "last_lr"}
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"checkpoint schedule {theirs} differs from the configured one {mine}")
        self.last_lr = float(state.get("last_lr", 0.0))
