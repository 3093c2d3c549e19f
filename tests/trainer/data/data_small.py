"""Generator settings of the data tests: 48–64 px images, frequent crowd regions."""

from __future__ import annotations

from vitbench.trainer.data.synth import SynthConfig

SMALL = SynthConfig(
    min_image_size=48, max_image_size=64, min_object_size=12, max_object_size=32, crowd_probability=0.3
)
