from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.synth import SynthConfig, generate_dataset

SMALL = SynthConfig(
    min_image_size=48, max_image_size=64, min_object_size=12, max_object_size=32, crowd_probability=0.3
)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image synthetic dataset (48–64 px), generated once per module."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 24, seed=3, cfg=SMALL)
    return root
