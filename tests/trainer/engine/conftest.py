from __future__ import annotations

from pathlib import Path

import pytest
from engine_tiny import TINY_SYNTH

from vitbench.trainer.data.synth import generate_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tinydata")
    generate_dataset(root, 12, seed=5, cfg=TINY_SYNTH, val_fraction=0.25)
    return root
