"""An embedded registry home is relocatable: copied elsewhere (the original deleted), it still downloads,
verifies and serves its versions — as when a `.vitbench` home is mounted into a container at another path."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import image_bytes

from vitbench.registry.client import IntegrityError, RegistryClient, relocate_artifact_uri
from vitbench.registry.hashing import sha256_file
from vitbench.registry.manifest import ModelManifest
from vitbench.service.app import create_app
from vitbench.service.settings import ServiceSettings

CHECKPOINT = bytes(range(256)) * 32


def _make_home(home: Path, fake_model_dir: Path) -> None:
    """``fake-detector`` version 1 with a checkpoint and its ONNX export, alias champion."""
    client = RegistryClient.embedded(home)
    checkpoint = home.parent / "model_final.pth"
    checkpoint.write_bytes(CHECKPOINT)
    run_id = client.start_run("relocation", run_name="fake")
    info = client.register_version("fake-detector", run_id, checkpoint, {"recipe": "bench-tiny"})
    client.end_run(run_id)
    client.attach_export(
        info, [fake_model_dir / "model.onnx"], ModelManifest.load(fake_model_dir / "manifest.json")
    )
    client.promote("fake-detector/1", "champion")


def _recorded_artifact_uris(home: Path) -> list[str]:
    with sqlite3.connect(home / "mlflow.db") as db:
        return [row[0] for row in db.execute("SELECT artifact_uri FROM runs")]


def _wait_status(client: TestClient, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get("/readyz").json()
        if body["status"] in ("ready", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError("no final status")


@pytest.mark.slow
def test_a_copied_home_downloads_and_serves_after_the_original_is_gone(
    tmp_path: Path, fake_model_dir: Path, make_client: Callable[..., TestClient]
) -> None:
    original = tmp_path / "made-here" / ".vitbench"
    original.mkdir(parents=True)
    _make_home(original, fake_model_dir)
    # MLflow records where the home was; nothing in the copy may depend on that path.
    assert all(str(original) in uri for uri in _recorded_artifact_uris(original))
    moved = tmp_path / "mounted" / "elsewhere" / "home"
    shutil.copytree(original, moved)
    shutil.rmtree(original.parent)

    client = RegistryClient.embedded(moved)
    got = client.download("fake-detector@champion", tmp_path / "download")
    assert got.path.read_bytes() == CHECKPOINT and got.sha256 == sha256_file(got.path)
    onnx, manifest, info = client.fetch_exported("fake-detector/1", tmp_path / "export")
    assert info.version == "1" and sha256_file(onnx) == manifest.files["model.onnx"]
    assert {"checkpoint/model_final.pth", "export/onnx/"} <= set(client.show("fake-detector/1").artifacts)
    assert not original.exists(), "nothing was written back to the old location"

    settings = ServiceSettings(
        model="fake-detector@champion", home=moved, providers=["CPUExecutionProvider"], intra_op_threads=1
    )
    app = make_client(create_app(settings), ready=False)
    assert _wait_status(app) == {"status": "ready"}
    resp = app.post("/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200 and resp.json()["model"] == {"name": "fake-detector", "version": "1"}
    assert (moved / "serving" / "fake-detector_champion" / "model.onnx").is_file()

    # Verification still applies in the copy: a tampered checkpoint is refused.
    stored = next((moved / "artifacts").rglob("checkpoint/model_final.pth"))
    stored.write_bytes(CHECKPOINT + b"\0")
    with pytest.raises(IntegrityError, match="refusing fake-detector/1"):
        client.download("fake-detector/1", tmp_path / "download-again")

    # New runs logged through the moved home land inside it.
    run_id = client.start_run("relocation", run_name="after-the-move")
    client.log_artifact(run_id, fake_model_dir / "manifest.json", "extra")
    assert list((moved / "artifacts").rglob(f"{run_id}/artifacts/extra/manifest.json"))
    assert not original.exists()


def test_relocate_artifact_uri_maps_only_the_embedded_layout(tmp_path: Path) -> None:
    root = tmp_path / "new" / "artifacts"
    old = "file:///old/place/.vitbench/artifacts/exp_1/0123abcd/artifacts"
    assert relocate_artifact_uri(old, root) == (root / "exp_1" / "0123abcd" / "artifacts").as_uri()
    assert (
        relocate_artifact_uri((root / "exp_1/r/artifacts").as_uri(), root)
        == (root / "exp_1" / "r" / "artifacts").as_uri()
    )
    for other in ("s3://bucket/exp/run/artifacts", "file:///mlruns/0/run/artifacts", "mlflow-artifacts:/x"):
        assert relocate_artifact_uri(other, root) == other
