"""``vitbench registry ...`` end to end on the embedded registry (typer's CliRunner)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.registry.client import RegistryClient

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VITBENCH_HOME", raising=False)


def _register(client: RegistryClient, name: str, ckpt: Path) -> None:
    run_id = client.start_run("cli")
    client.register_version(name, run_id, ckpt, {"init": "mae", "recipe": "bench-tiny", "ap_box": "0.1234"})
    client.end_run(run_id)


def test_list_promote_download(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _register(registry, model_name, checkpoint)
    home = ["--home", str(registry_home)]
    res = runner.invoke(app, ["registry", "list", "--json", *home])
    assert res.exit_code == 0, res.output
    models = {m["name"]: m for m in json.loads(res.stdout)}
    assert models[model_name]["versions"][0]["tags"]["ap_box"] == "0.1234"

    res = runner.invoke(app, ["registry", "promote", f"{model_name}/1", *home])
    assert res.exit_code == 0, res.output
    assert f"{model_name}@champion → version 1" in res.stdout

    res = runner.invoke(app, ["registry", "show", f"{model_name}@champion", "--json", *home])
    shown = json.loads(res.stdout)["version"]
    assert shown["aliases"] == ["champion"]
    assert [(p["action"], p["alias"], p["previous"]) for p in shown["promotions"]] == [
        ("promoted", "champion", None)
    ]
    res = runner.invoke(app, ["registry", "show", f"{model_name}/1", *home])
    assert res.exit_code == 0 and "Promotion history" in res.stdout and "promoted" in res.stdout

    out = ["--out", str(tmp_path / "dl")]
    res = runner.invoke(app, ["registry", "download", f"{model_name}@champion", *out, *home])
    assert res.exit_code == 0, res.output
    got = (tmp_path / "dl" / "model_final.pth").read_bytes()
    assert got == checkpoint.read_bytes()
    assert hashlib.sha256(got).hexdigest() in res.stdout

    res = runner.invoke(app, ["registry", "list", model_name, *home])
    assert res.exit_code == 0 and "champion" in res.stdout


def test_user_errors_exit_2_without_traceback(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path
) -> None:
    _register(registry, model_name, checkpoint)
    home = ["--home", str(registry_home)]
    for args, message in (
        (["registry", "show", "nope@champion"], "unknown model 'nope'"),
        (["registry", "download", f"{model_name}@champion"], "has no alias 'champion'"),
        (["registry", "promote", "not-a-ref"], "bad model reference"),
    ):
        res = runner.invoke(app, [*args, *home])
        assert res.exit_code == 2, res.output
        assert message in res.stderr and "Traceback" not in res.output


def test_tampered_download_exit_2(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _register(registry, model_name, checkpoint)
    run_id = registry.resolve(f"{model_name}/1").run_id or ""
    stored = next(p for p in (registry_home / "artifacts").rglob("model_final.pth") if run_id in str(p))
    stored.write_bytes(b"tampered")
    res = runner.invoke(
        app,
        [
            "registry",
            "download",
            f"{model_name}/1",
            "--out",
            str(tmp_path / "out"),
            "--home",
            str(registry_home),
        ],
    )
    assert res.exit_code == 2
    assert "sha256 mismatch" in res.stderr
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_unreachable_tracking_uri_exit_3_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("VITBENCH_REGISTRY_TIMEOUT", "1")
    start = time.monotonic()
    res = runner.invoke(app, ["registry", "list"])
    assert res.exit_code == 3
    assert "did not answer" in res.stderr
    assert time.monotonic() - start < 15
