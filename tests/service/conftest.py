"""Fixtures for the service tests: the fake detector folder, apps and clients with their lifespan."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from fake_detector import write_fake_model_dir  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402

CANVAS = 64


@pytest.fixture(scope="session")
def fake_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported-model folder with the fake detector (S = 64)."""
    return write_fake_model_dir(tmp_path_factory.mktemp("fake-model"), size=CANVAS)


def settings_for(model_dir: Path, /, **overrides: Any) -> ServiceSettings:
    """Settings serving ``model_dir`` on CPU, with ``overrides``."""
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "providers": ["CPUExecutionProvider"],
        "intra_op_threads": 1,
    }
    values.update(overrides)
    return ServiceSettings(**values)


def wait_ready(client: TestClient, timeout_s: float = 20.0) -> None:
    """Poll /readyz until 200 (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"service not ready after {timeout_s}s: {client.get('/readyz').json()}")


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


def image_bytes(
    width: int = 200, height: int = 100, fmt: str = "JPEG", mode: str = "RGB", **save: Any
) -> bytes:
    """A real encoded image: a gradient with a bright rectangle."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 90)], -1)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = (250, 250, 20)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()
