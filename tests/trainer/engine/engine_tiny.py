"""Shared settings of the engine tests: a 64-px bench-tiny variant that steps in well under a second."""

from __future__ import annotations

from vitbench.trainer.data.synth import SynthConfig

# 64-px canvas, 4x4 tokens, small heads: a few seconds per handful of CPU steps.
TINY_OVERRIDES: list[str] = [
    "input.image_size=64",
    "backbone.pretrain_img_size=64",
    "solver.batch_size=2",
    "solver.max_iters=6",
    "solver.warmup_iters=2",
    "solver.checkpoint_period=2",
    "solver.eval_period=0",
    "heads.rpn_batch_size_per_image=32",
    "heads.roi_batch_size_per_image=16",
    "heads.detections_per_img=10",
    "data.num_workers=0",
]
TINY_SYNTH = SynthConfig(min_image_size=48, max_image_size=64, min_object_size=14, max_object_size=36)
