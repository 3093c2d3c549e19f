from __future__ import annotations

from pathlib import Path

import pytest

from vitbench.trainer.data.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    cfg = SynthConfig(
        min_image_size=48, max_image_size=64, min_object_size=12, max_object_size=32, crowd_probability=0.4
    )
    generate_dataset(root, 20, seed=11, cfg=cfg, val_fraction=0.5)
    return root
