"""Integration tier: a real ``mlflow server --app-name basic-auth`` set up the way the chart sets it up.

The server runs on a loopback port with one SQLite database for both the tracking store and the auth tables
(the chart shares its PostgreSQL database the same way), ``default_permission = NO_PERMISSIONS``, the admin
from ``MLFLOW_AUTH_ADMIN_*``; the chart's own hook script (helm/vitbench/files/mlflow-auth-bootstrap.py)
creates the trainer, promoter and service users with the chart's grants. Then: anonymous requests are
refused; the service's credentials read but cannot register, tag or promote; the trainer registers; the
promoter promotes and the history says who; and a version whose export and digest tag are rewritten by
another writer is refused by a service pinned to the original digest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pinned_serving import _manifest, _register_export
from test_server_integration import _free_port, _stop, _wait

from vitbench.registry.client import RegistryClient, RegistryPermissionError
from vitbench.service.model_source import ModelSourceError, Pin, RegistryModelSource

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "helm" / "vitbench" / "files" / "mlflow-auth-bootstrap.py"
ADMIN = ("admin", "admin-password-0123456789")
USERS = {
    "trainer": ("vitbench-trainer", "trainer-password-0123456789"),
    "promoter": ("vitbench-promoter", "promoter-password-0123456789"),
    "service": ("vitbench-service", "service-password-0123456789"),
    "nobody": ("someone-else", "someone-password-0123456789"),
}
# The chart's default plan (mlflow.auth.models = ["*"]); tests/deploy/test_k8s_chart.py checks the chart's.
GRANTS = {
    "trainer": [["experiment", "*", "EDIT"], ["registered_model", "*", "EDIT"]],
    "promoter": [["experiment", "*", "READ"], ["registered_model", "*", "EDIT"]],
    "service": [["experiment", "*", "READ"], ["registered_model", "*", "READ"]],
    "nobody": [],
}
INI = """[mlflow]
default_permission = NO_PERMISSIONS
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
database_uri = {db}
"""


def _bootstrap(uri: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
    }
    plan = []
    for role, (user, password) in USERS.items():
        env[f"{role.upper()}_USERNAME"], env[f"{role.upper()}_PASSWORD"] = user, password
        plan.append(
            {
                "username_env": f"{role.upper()}_USERNAME",
                "password_env": f"{role.upper()}_PASSWORD",
                "grants": GRANTS[role],
            }
        )
    env["VITBENCH_AUTH_PLAN"] = json.dumps({"users": plan})
    done = subprocess.run(
        [sys.executable, str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def auth_server() -> Iterator[str]:
    """The basic-auth server with the chart's users; yields its URI."""
    root = Path(tempfile.mkdtemp(prefix="vitbench-auth-"))
    db = f"sqlite:///{root / 'mlflow.db'}"
    (root / "basic_auth.ini").write_text(INI.format(db=db))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "integration-test-key",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    cmd = [
        *(str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", db, "--artifacts-destination", str(root / "artifacts")),
    ]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait(
            "mlflow server (basic-auth)",
            lambda: urllib.request.urlopen(f"{uri}/health", timeout=2),
            300,
            proc,
        )
        first = _bootstrap(uri)
        assert "user vitbench-service: created" in first and "READ on registered_model *: granted" in first
        again = _bootstrap(uri)  # idempotent: the same plan changes nothing but the passwords it resets
        assert "granted" not in again and again.count("unchanged") == 6
        yield uri
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)


def _as(uri: str, role: str) -> RegistryClient:
    user, password = USERS[role]
    return RegistryClient(uri, username=user, password=password, timeout_s=60)


def test_anonymous_requests_are_refused(auth_server: str) -> None:
    anonymous = RegistryClient(auth_server, timeout_s=60)
    with pytest.raises(RegistryPermissionError, match=r"requires authentication .*HTTP 401"):
        anonymous.start_run("anonymous")
    with pytest.raises(RegistryPermissionError, match="HTTP 401"):
        anonymous.list_models()


def test_roles_are_kept_apart_and_a_pinned_service_refuses_rewritten_tags(
    auth_server: str, tmp_path: Path
) -> None:
    trainer, promoter, service = (_as(auth_server, r) for r in ("trainer", "promoter", "service"))
    name = "auth-model"
    digest = _register_export(trainer, name, b"the trained graph", tmp_path)  # the trainer registers

    # The service reads (resolve, lineage, verified download) ...
    assert service.resolve(f"{name}/1").tags["export.onnx.manifest_sha256"] == digest
    onnx, _, _ = service.fetch_exported(f"{name}/1", tmp_path / "read")
    assert onnx.read_bytes() == b"the trained graph"
    # ... but cannot register, tag or promote.
    run_id = trainer.start_run("auth")
    ckpt = tmp_path / "ckpt.pth"
    ckpt.write_bytes(b"weights")
    trainer.log_artifact(run_id, ckpt, "checkpoint")
    with pytest.raises(RegistryPermissionError, match=r"user 'vitbench-service'.*HTTP 403"):
        service.start_run("auth")
    with pytest.raises(RegistryPermissionError, match="HTTP 403"):
        service.register_version(name, run_id, ckpt, {})
    with pytest.raises(RegistryPermissionError, match="HTTP 403"):
        service.set_version_tag(f"{name}/1", "sha256", "0" * 64)
    with pytest.raises(RegistryPermissionError, match="HTTP 403"):
        service.promote(f"{name}/1")
    # A user without grants sees nothing (default_permission = NO_PERMISSIONS).
    with pytest.raises(RegistryPermissionError, match="HTTP 403"):
        _as(auth_server, "nobody").resolve(f"{name}/1")

    # The promoter promotes; the history records the authenticated user.
    promoted = promoter.promote(f"{name}/1")
    (event,) = promoted.promotions
    assert (event.by, event.identity, event.alias, event.previous) == (
        "vitbench-promoter",
        "mlflow",
        "champion",
        None,
    )

    # Another writer (the trainer: it holds EDIT) swaps version 1's export and rewrites its digest tag.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.onnx").write_bytes(b"a graph nobody reviewed")
    trainer.attach_export(f"{name}/1", [evil / "model.onnx"], _manifest(evil / "model.onnx", name, "1"))
    assert service.resolve(f"{name}@champion").tags["export.onnx.manifest_sha256"] != digest
    # Unpinned, the tags vouch for the new bytes; pinned to the reviewed digest, the service refuses them.
    onnx, _, _ = service.fetch_exported(f"{name}@champion", tmp_path / "unpinned")
    assert onnx.read_bytes() == b"a graph nobody reviewed"
    source = RegistryModelSource(
        f"{name}@champion", lambda: service, tmp_path / "cache", pin=Pin(f"{name}/1", digest)
    )
    with pytest.raises(ModelSourceError, match=rf"pinned to {digest} \(VITBENCH_PIN_SHA256\)"):
        source.fetch()
    assert not list((tmp_path / "cache").rglob("model.onnx"))
