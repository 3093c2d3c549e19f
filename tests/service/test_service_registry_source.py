"""Serving ``name@alias`` from the embedded MLflow registry: resolve, download, verify, refuse tampering."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import image_bytes

from vitbench.registry.client import RegistryClient
from vitbench.registry.manifest import ModelManifest
from vitbench.service.app import create_app
from vitbench.service.settings import ServiceSettings

# Creating the embedded MLflow store (SQLite schema migrations) takes ~30 s on 2 busy cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory: pytest.TempPathFactory, fake_model_dir: Path) -> Path:
    """An embedded registry holding ``fake-detector`` version 1 with its ONNX export, alias champion."""
    home = tmp_path_factory.mktemp("registry-home")
    client = RegistryClient.embedded(home)
    checkpoint = home / "model_final.pth"
    checkpoint.write_bytes(b"stand-in checkpoint bytes")
    run_id = client.start_run("service-tests", run_name="fake")
    info = client.register_version("fake-detector", run_id, checkpoint, {"recipe": "bench-tiny"})
    client.end_run(run_id)
    manifest = ModelManifest.load(fake_model_dir / "manifest.json")
    client.attach_export(info, [fake_model_dir / "model.onnx"], manifest)
    client.promote("fake-detector/1", "champion")
    return home


def _settings(home: Path, model: str) -> ServiceSettings:
    return ServiceSettings(model=model, home=home, providers=["CPUExecutionProvider"], intra_op_threads=1)


def _wait_status(client: TestClient, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get("/readyz").json()
        if body["status"] in ("ready", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError("no final status")


def test_serves_registered_alias(registry_home: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(create_app(_settings(registry_home, "fake-detector@champion")), ready=False)
    assert _wait_status(client) == {"status": "ready"}
    (model,) = client.get("/v1/models").json()["models"]
    assert (model["name"], model["version"], model["reference"]) == (
        "fake-detector",
        "1",
        "fake-detector@champion",
    )
    resp = client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200 and resp.json()["model"] == {"name": "fake-detector", "version": "1"}
    assert (registry_home / "serving" / "fake-detector_champion" / "model.onnx").is_file()


def test_unknown_model_is_a_clear_failure(
    registry_home: Path, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(create_app(_settings(registry_home, "no-such-model@champion")), ready=False)
    body = _wait_status(client)
    assert body["status"] == "failed" and "no-such-model" in body["detail"]


def test_tampered_export_is_refused(registry_home: Path, make_client: Callable[..., TestClient]) -> None:
    stored = next((registry_home / "artifacts").rglob("export/onnx/model.onnx"))
    original = stored.read_bytes()
    stored.write_bytes(original + b"\0")
    try:
        client = make_client(create_app(_settings(registry_home, "fake-detector/1")), ready=False)
        body = _wait_status(client)
        assert body["status"] == "failed" and "sha256 mismatch" in body["detail"]
        assert (
            client.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"}).status_code
            == 503
        )
    finally:
        stored.write_bytes(original)
