"""Shared fixtures for the initialization tests: tiny recipes and detectors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from vitbench.trainer.recipes import Recipe, get_recipe


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded on the shared CI cores; the setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def bench_tiny() -> Recipe:
    return get_recipe("bench-tiny")
