"""The 64-px bench-tiny variant the end-to-end tests train: a few CPU seconds for a handful of steps.

``tiny(max_iters, checkpoint_period, eval_period)`` gives the recipe overrides; ``sets(...)`` the same
as ``--set`` command-line arguments; ``TINY_SYNTH`` draws 48-64 px synthetic images to match.
"""

from __future__ import annotations

from vitbench.trainer.data.synth import SynthConfig

TINY_MODEL: tuple[str, ...] = (
    "input.image_size=64",
    "backbone.pretrain_img_size=64",
    "solver.batch_size=2",
    "solver.warmup_iters=1",
    "heads.rpn_batch_size_per_image=32",
    "heads.roi_batch_size_per_image=16",
    "data.num_workers=0",
)
TINY_SYNTH = SynthConfig(min_image_size=48, max_image_size=64, min_object_size=14, max_object_size=36)


def tiny(max_iters: int, checkpoint_period: int, eval_period: int = 0) -> tuple[str, ...]:
    """Recipe overrides: the tiny model with this schedule."""
    return (
        *TINY_MODEL,
        f"solver.max_iters={max_iters}",
        f"solver.checkpoint_period={checkpoint_period}",
        f"solver.eval_period={eval_period}",
    )


def sets(max_iters: int, checkpoint_period: int, eval_period: int = 0) -> list[str]:
    """:func:`tiny` as ``--set key=value`` arguments."""
    return [arg for o in tiny(max_iters, checkpoint_period, eval_period) for arg in ("--set", o)]
