"""Fixtures for the registry tests: one embedded registry per session, distinct model names per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitbench.registry.client import RegistryClient

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_counter = itertools.count()


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh embedded-registry folder shared by the session (SQLite setup takes seconds)."""
    return tmp_path_factory.mktemp("vitbench-home")


@pytest.fixture(scope="session")
def registry(registry_home: Path) -> RegistryClient:
    """The embedded registry under ``registry_home``."""
    return RegistryClient.embedded(registry_home)


@pytest.fixture
def model_name() -> Iterator[str]:
    """A model name no other test in the session uses."""
    yield f"model-{next(_counter)}"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A stand-in checkpoint file with deterministic, non-trivial bytes."""
    path = tmp_path / "model_final.pth"
    path.write_bytes(bytes(range(256)) * 64)
    return path
