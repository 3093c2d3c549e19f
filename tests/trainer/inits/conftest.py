"""Shared fixtures for the initialization tests: tiny recipes and detectors."""

from __future__ import annotations

import pytest
import torch

from trainer.recipes import Recipe, apply_overrides, get_recipe


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def bench_tiny() -> Recipe:
    return get_recipe("bench-tiny")


def equivalence_recipe(name: str = "bench-tiny", *extra: str) -> Recipe:
    """bench-tiny at 224 px with pos_embed stored at the 14x14 pre-training grid."""
    return apply_overrides(
        get_recipe(name), ["input.image_size=224", "backbone.pretrain_img_size=224", *extra]
    )
