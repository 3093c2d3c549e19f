"""Helpers shared by the service tests (settings, readiness wait, encoded test images)."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from vitbench.service.settings import ServiceSettings


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


@contextlib.contextmanager
def running_server(app: Any, timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free localhost port; yields the base URL once ready."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server at {base} not ready after {timeout_s}s")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)
