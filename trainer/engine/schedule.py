"""Learning-rate schedules: linear warmup times a half-period cosine or a step decay.

The factor multiplies each parameter group's base lr (which already carries its layer-decay scale), as
detectron2's ``WarmupParamScheduler`` does: during the first ``warmup_iters`` iterations the factor
ramps linearly from ``warmup_factor`` to 1 on top of the main schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from vitbench.trainer.recipes import SolverConfig


def lr_factor(
    iteration: int,
    max_iters: int,
    schedule: Literal["cosine", "step"] = "cosine",
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    steps: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base lr at ``iteration`` (0-based count of steps already taken).

    cosine: ``0.5 * (1 + cos(pi * it / max_iters))`` (1 → 0); step: ``gamma ** #{s in steps: s <= it}``.
    """
    if max_iters <= 0:
        raise ValueError(f"max_iters must be positive, got {max_iters}")
    it = min(max(iteration, 0), max_iters)
    if schedule == "cosine":
        main = 0.5 * (1.0 + math.cos(math.pi * it / max_iters))
    elif schedule == "step":
        main = gamma ** sum(1 for s in steps if s <= it)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; expected 'cosine' or 'step'")
    if warmup_iters > 0 and it < warmup_iters:
        alpha = it / warmup_iters
        main *= warmup_factor * (1.0 - alpha) + alpha
    return main


def build_scheduler(
    optimizer: torch.optim.Optimizer, solver: SolverConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step with :func:`lr_factor` of the recipe's ``solver``
    (``max_iters``, ``schedule``, ``warmup_iters``, ``warmup_factor``, ``steps``, ``gamma``)."""
    s = solver

    def factor(it: int) -> float:
        return lr_factor(it, s.max_iters, s.schedule, s.warmup_iters, s.warmup_factor, s.steps, s.gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
