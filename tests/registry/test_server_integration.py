"""Integration tier: the production registry topology on loopback.

Starts a real PostgreSQL (Debian's postgresql-15: initdb/pg_ctl with a private data dir and a free
port, as user ``postgres`` when run as root), ``moto_server`` as the S3 store, and ``mlflow server``
(backend PostgreSQL, ``--artifacts-destination s3://...``, ``--allowed-hosts``); then registers,
promotes, downloads (sha256-verified), refuses an artifact tampered in the bucket, round-trips an
export, drives the CLI through ``MLFLOW_TRACKING_URI``, and stops every process.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitbench.registry.client import IntegrityError, ModelNotFoundError, RegistryClient
from vitbench.registry.manifest import InputSpec, ModelManifest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "mlflow-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: object, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}")
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL 15 cluster on 127.0.0.1:<free port>; yields the SQLAlchemy URI of database ``mlflow``."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not installed (make system-deps)")
    pg_bin = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="vitbench-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(root, "postgres", "postgres")

    def run(cmd: str) -> None:
        argv = ["su", "postgres", "-s", "/bin/bash", "-c", cmd] if as_root else ["bash", "-c", cmd]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    port = _free_port()
    data = root / "data"
    run(f"{pg_bin}/initdb -D {data} -U postgres --auth=trust -E UTF8")
    run(
        f"{pg_bin}/pg_ctl -D {data} -l {root}/log -w -t 60 "
        f"-o '-p {port} -k {root} -c listen_addresses=127.0.0.1' start"
    )
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE USER mlflow PASSWORD 'mlflow'")
            cur.execute("CREATE DATABASE mlflow OWNER mlflow")
        conn.close()
        yield f"postgresql+psycopg2://mlflow:mlflow@127.0.0.1:{port}/mlflow"
    finally:
        with contextlib.suppress(Exception):
            run(f"{pg_bin}/pg_ctl -D {data} -m fast -w stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """``moto_server`` on loopback with bucket ``mlflow-artifacts``; yields its endpoint URL."""
    moto = shutil.which("moto_server", path=str(BIN)) or shutil.which("moto_server")
    if moto is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait("moto_server", lambda: _port_open(port), 60, proc)
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint, **_boto_kw()).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        _stop(proc)
    assert proc.poll() is not None


def _boto_kw() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def mlflow_server(postgres: str, s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` with the PostgreSQL backend and proxied S3 artifacts; yields its URL."""
    mlflow = shutil.which("mlflow", path=str(BIN))
    if mlflow is None:
        pytest.skip("the mlflow server package is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = os.environ | AWS | {"MLFLOW_S3_ENDPOINT_URL": s3, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", postgres,
                "--artifacts-destination", f"s3://{BUCKET}",
                "--allowed-hosts", f"localhost:*,127.0.0.1:*,127.0.0.1:{port}",
            ],
            env=env, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(
            "mlflow server",
            lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200,
            180,
            proc,
        )
        yield url
    except Exception:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        _stop(proc)
    assert proc.poll() is not None


def test_register_promote_download_through_server(mlflow_server: str, s3: str, tmp_path: Path) -> None:
    client = RegistryClient(mlflow_server, timeout_s=30)
    ckpt = tmp_path / "model_final.pth"
    ckpt.write_bytes(os.urandom(4096))
    run_id = client.start_run("integration", "run-1")
    client.log_params(run_id, {"input": {"image_size": 128}, "name": "bench-tiny"})
    client.log_metrics(run_id, {"loss": 1.25}, step=3)
    info = client.register_version("vitdet-int", run_id, ckpt, {"init": "mae", "recipe": "vitdet-tiny"})
    client.end_run(run_id)
    assert info.version == "1" and isinstance(info.version, str)
    assert client.promote("vitdet-int/1").aliases == ("champion",)

    result = client.download("vitdet-int@champion", tmp_path / "dl")
    assert result.path.read_bytes() == ckpt.read_bytes()
    assert result.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    lineage = client.show("vitdet-int@champion")
    assert lineage.params["input.image_size"] == "128" and lineage.metrics["loss"] == 1.25

    with pytest.raises(ModelNotFoundError, match="has no alias 'staging'"):
        client.resolve("vitdet-int@staging")
    with pytest.raises(ModelNotFoundError, match="unknown model 'missing'"):
        client.resolve("missing/1")

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"graph")
    manifest = ModelManifest(
        recipe="vitdet-tiny",
        input=InputSpec(size=128, pixel_mean=(1, 2, 3), pixel_std=(1, 1, 1)),
        class_names=("a",),
        opset=17,
        files={"model.onnx": hashlib.sha256(b"graph").hexdigest()},
    )
    client.attach_export("vitdet-int@champion", [onnx], manifest)
    path, got, _ = client.fetch_exported("vitdet-int@champion", tmp_path / "fx")
    assert path.read_bytes() == b"graph" and got == manifest

    # Tamper with the stored object in the bucket: the download must be refused.
    import boto3

    bucket = boto3.client("s3", endpoint_url=s3, **_boto_kw())
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]]
    key = next(k for k in keys if run_id in k and k.endswith("checkpoint/model_final.pth"))
    bucket.put_object(Bucket=BUCKET, Key=key, Body=b"tampered")
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        client.download("vitdet-int@champion", tmp_path / "dl2")


def test_cli_against_server(mlflow_server: str, tmp_path: Path) -> None:
    env = os.environ | {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true"}
    client = RegistryClient(mlflow_server, timeout_s=30)
    ckpt = tmp_path / "model_final.pth"
    ckpt.write_bytes(b"cli weights")
    run_id = client.start_run("integration")
    client.register_version("cli-int", run_id, ckpt, {"init": "beit"})
    vitbench = [sys.executable, "-m", "vitbench.cli.main"]
    promote = subprocess.run(
        [*vitbench, "registry", "promote", "cli-int/1"], env=env, capture_output=True, timeout=120
    )
    assert promote.returncode == 0, promote.stderr
    dl = subprocess.run(
        [*vitbench, "registry", "download", "cli-int@champion", "--out", str(tmp_path / "out"), "--json"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert dl.returncode == 0, dl.stderr
    assert json.loads(dl.stdout)["sha256"] == hashlib.sha256(b"cli weights").hexdigest()
    assert (tmp_path / "out" / "model_final.pth").read_bytes() == b"cli weights"
    missing = subprocess.run(
        [*vitbench, "registry", "show", "cli-int@nope"], env=env, capture_output=True, timeout=120
    )
    assert missing.returncode == 2 and b"has no alias 'nope'" in missing.stderr
