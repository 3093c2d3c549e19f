"""RegistryClient against the embedded SQLite store: register, resolve, promote, verified download."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from vitbench.registry.client import (
    IntegrityError,
    ModelNotFoundError,
    ModelRef,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
)
from vitbench.registry.manifest import InputSpec, ModelManifest


def _register(client: RegistryClient, name: str, ckpt: Path, **tags: str) -> str:
    run_id = client.start_run("tests", run_name=name)
    client.log_params(run_id, {"backbone": {"depth": 4, "taps": [1, 3]}, "name": "bench-tiny"})
    client.log_metrics(run_id, {"loss": 2.5, "lr": 1e-4}, step=1)
    client.log_metrics(run_id, {"loss": 1.5, "bbox/AP": 0.25}, step=2)
    info = client.register_version(name, run_id, ckpt, {"init": "mae", "recipe": "bench-tiny", **tags})
    client.end_run(run_id)
    return info.version


def test_register_sets_provenance_tags_and_string_versions(
    registry: RegistryClient, model_name: str, checkpoint: Path
) -> None:
    v1 = _register(registry, model_name, checkpoint, dataset="synth")
    v2 = _register(registry, model_name, checkpoint, dataset="synth")
    assert (v1, v2) == ("1", "2")
    info = registry.resolve(f"{model_name}/1")
    assert info.tags["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert info.tags["artifact"] == "model_final.pth"
    assert info.tags["init"] == "mae" and info.tags["dataset"] == "synth"
    assert info.source == f"runs:/{info.run_id}/checkpoint"
    assert [v.version for v in registry.list_versions(model_name)] == ["2", "1"]
    assert model_name in [m.name for m in registry.list_models()]


def test_show_returns_lineage(registry: RegistryClient, model_name: str, checkpoint: Path) -> None:
    _register(registry, model_name, checkpoint)
    lineage = registry.show(f"{model_name}/1")
    assert lineage.params["backbone.depth"] == "4"
    assert lineage.params["backbone.taps"] == "[1, 3]"
    assert lineage.metrics == {"loss": 1.5, "lr": 1e-4, "bbox/AP": 0.25}
    assert lineage.run_status == "FINISHED" and lineage.experiment == "tests"
    assert "checkpoint/model_final.pth" in lineage.artifacts
    assert registry.metric_history(lineage.version.run_id or "", "loss") == [(1, 2.5), (2, 1.5)]


def test_promote_moves_champion_and_download_returns_same_bytes(
    registry: RegistryClient, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _register(registry, model_name, checkpoint)
    other = tmp_path / "other" / "model_final.pth"
    other.parent.mkdir()
    other.write_bytes(b"second model")
    run = registry.start_run("tests")
    registry.register_version(model_name, run, other, {"init": "beit"})
    assert registry.promote(f"{model_name}/1").aliases == ("champion",)
    assert registry.resolve(f"{model_name}@champion").version == "1"
    registry.promote(f"{model_name}/2")
    assert registry.resolve(f"{model_name}@champion").version == "2"
    assert registry.resolve(f"{model_name}/1").aliases == ()
    result = registry.download(f"{model_name}@champion", tmp_path / "dl")
    assert result.path.read_bytes() == b"second model"
    assert result.sha256 == hashlib.sha256(b"second model").hexdigest()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["model_final.pth"]


def test_tampered_artifact_is_refused(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _register(registry, model_name, checkpoint)
    info = registry.resolve(f"{model_name}/1")
    stored = next(p for p in (registry_home / "artifacts").rglob("model_final.pth") if info.run_id in str(p))
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match=r"sha256 mismatch for model_final\.pth"):
        registry.download(f"{model_name}/1", tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []  # nothing half-delivered


def test_wrong_references_name_what_exists(
    registry: RegistryClient, model_name: str, checkpoint: Path
) -> None:
    _register(registry, model_name, checkpoint)
    with pytest.raises(
        ModelNotFoundError, match=rf"unknown model 'no-such-model'.*known models: .*{model_name}"
    ):
        registry.resolve("no-such-model@champion")
    with pytest.raises(
        ModelNotFoundError, match=rf"'{model_name}' has no alias 'champion'; its aliases: \(none\)"
    ):
        registry.resolve(f"{model_name}@champion")
    with pytest.raises(ModelNotFoundError, match="has no version 9; its versions: 1"):
        registry.resolve(f"{model_name}/9")


@pytest.mark.parametrize("text", ["", "name", "name@", "@alias", "name/0", "name/x", "bad name/1", "a@b@c"])
def test_bad_reference_syntax(text: str) -> None:
    with pytest.raises(RegistryError, match="expected NAME@ALIAS"):
        ModelRef.parse(text)


def test_reference_forms() -> None:
    assert ModelRef.parse("models:/vitdet-tiny@champion") == ModelRef("vitdet-tiny", alias="champion")
    assert ModelRef.parse("vitdet-tiny/03") == ModelRef("vitdet-tiny", version="3")


def test_bad_alias_is_rejected(registry: RegistryClient, model_name: str, checkpoint: Path) -> None:
    _register(registry, model_name, checkpoint)
    with pytest.raises(RegistryError, match="bad alias 'latest'"):
        registry.promote(f"{model_name}/1", "latest")


def test_connection_refused_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RegistryClient(f"http://127.0.0.1:{port}", timeout_s=1, max_retries=1)
    start = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match=rf"registry http://127.0.0.1:{port} did not answer"):
        client.resolve("m@champion")
    assert time.monotonic() - start < 10


def test_silent_server_times_out() -> None:
    """A server that accepts connections but never answers must not hang the client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        client = RegistryClient(f"http://127.0.0.1:{port}", timeout_s=1, max_retries=0)
        start = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match="timeout 1 s"):
            client.list_models()
        assert time.monotonic() - start < 8
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        server.close()


def test_file_store_uri_is_rejected() -> None:
    with pytest.raises(RegistryError, match="maintenance mode"):
        RegistryClient("file:///tmp/mlruns")


def _manifest(onnx: Path) -> ModelManifest:
    return ModelManifest(
        recipe="bench-tiny",
        input=InputSpec(size=128, pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375)),
        class_names=("circle", "square"),
        opset=17,
        files={"model.onnx": hashlib.sha256(onnx.read_bytes()).hexdigest()},
    )


def test_attach_and_fetch_export(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _register(registry, model_name, checkpoint)
    with pytest.raises(RegistryError, match="has no onnx export; run `vitbench export"):
        registry.fetch_exported(f"{model_name}/1", tmp_path / "none")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx graph bytes")
    registry.attach_export(f"{model_name}/1", [onnx], _manifest(onnx))
    registry.promote(f"{model_name}/1")
    path, manifest, info = registry.fetch_exported(f"{model_name}@champion", tmp_path / "fetch")
    assert path.read_bytes() == b"onnx graph bytes"
    assert manifest.class_names == ("circle", "square") and info.version == "1"
    assert (tmp_path / "fetch" / "manifest.json").is_file()
    stored = next(p for p in (registry_home / "artifacts").rglob("model.onnx") if info.run_id in str(p))
    stored.write_bytes(b"evil graph")
    with pytest.raises(IntegrityError, match=r"sha256 mismatch for model\.onnx"):
        registry.fetch_exported(f"{model_name}@champion", tmp_path / "fetch2")
    assert list((tmp_path / "fetch2").iterdir()) == []


def test_attach_export_checks_manifest_digests(
    registry: RegistryClient, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _register(registry, model_name, checkpoint)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"one")
    manifest = _manifest(onnx)
    onnx.write_bytes(b"two")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        registry.attach_export(f"{model_name}/1", [onnx], manifest)


def test_promotions_record_who_when_and_the_previous_holder(
    registry: RegistryClient, model_name: str, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "not-used-by-the-embedded-registry")
    _register(registry, model_name, checkpoint)
    _register(registry, model_name, checkpoint)
    registry.promote(f"{model_name}/1")
    v2 = registry.promote(f"{model_name}/2")
    (event,) = v2.promotions
    assert (event.action, event.alias, event.previous, event.next) == ("promoted", "champion", "1", None)
    assert event.identity == "os" and event.by == getpass.getuser()
    when = dt.datetime.fromisoformat(event.at.replace("Z", "+00:00"))
    assert when.tzinfo is not None and abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 120
    v1 = registry.resolve(f"{model_name}/1")
    assert [(e.action, e.previous, e.next) for e in v1.promotions] == [
        ("promoted", None, None),
        ("replaced", None, "2"),
    ]
    registry.remove_alias(model_name, "champion")
    assert [e.action for e in registry.resolve(f"{model_name}/2").promotions] == ["promoted", "removed"]
    assert registry.resolve(f"{model_name}/2").to_dict()["promotions"][0]["previous"] == "1"


def test_http_credentials_are_given_per_client_or_both() -> None:
    with pytest.raises(RegistryError, match="give both username and password"):
        RegistryClient("http://127.0.0.1:1", username="u")
    assert RegistryClient("http://127.0.0.1:1", username="alice", password="pw").user == "alice"
