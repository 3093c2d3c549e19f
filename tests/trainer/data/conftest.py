from __future__ import annotations

from pathlib import Path

import pytest
from data_small import SMALL

from vitbench.trainer.data.synth import generate_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image synthetic dataset (48–64 px), generated once per module."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 24, seed=3, cfg=SMALL)
    return root
