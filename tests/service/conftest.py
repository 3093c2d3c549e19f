"""Fixtures for the service tests: the fake detector folder, apps and clients with their lifespan."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_detector import write_fake_model_dir
from fastapi import FastAPI
from fastapi.testclient import TestClient
from service_helpers import settings_for, wait_ready

from vitbench.service.app import create_app

CANVAS = 64


@pytest.fixture(scope="session")
def fake_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported-model folder with the fake detector (S = 64)."""
    return write_fake_model_dir(tmp_path_factory.mktemp("fake-model"), size=CANVAS)


@pytest.fixture
def make_client(fake_model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory: ``make_client(**settings_overrides)`` → a ready TestClient (lifespan entered)."""
    opened: list[TestClient] = []

    def make(app: FastAPI | None = None, ready: bool = True, **overrides: Any) -> TestClient:
        client = TestClient(app or create_app(settings_for(fake_model_dir, **overrides)))
        client.__enter__()
        opened.append(client)
        if ready:
            wait_ready(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A ready client on the fake detector with default settings."""
    return make_client()
