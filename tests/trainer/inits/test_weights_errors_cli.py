"""A weights file or URI that cannot be used ends in one line saying why, exit 2, no traceback.

Driven through ``vitbench inits check`` (the same loader ``train --weights`` uses) on typer's runner.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitbench.cli.main import app

runner = CliRunner()


def _check(weights: str) -> tuple[int, str]:
    res = runner.invoke(app, ["inits", "check", "--init", "mae", "--path", weights, "--recipe", "bench-tiny"])
    assert "Traceback" not in res.output, res.output
    return res.exit_code, " ".join(res.output.split())


def test_a_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, these are my notes\n")
    code, msg = _check(str(notes))
    assert code == 2
    assert f"cannot read {notes}: the file is truncated or not a PyTorch checkpoint" in msg


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 8)
    code, msg = _check(str(junk))
    assert code == 2 and "not a PyTorch checkpoint" in msg


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    code, msg = _check(str(tmp_path))
    assert code == 2
    assert f"weights path {tmp_path} is a directory; expected a checkpoint file" in msg


def test_http_errors_give_the_reason(http_dir: tuple[Path, str]) -> None:
    _root, http_root = http_dir
    code, msg = _check(f"{http_root}/missing.pth")
    assert code == 2 and f"cannot read {http_root}/missing.pth: HTTP 404" in msg
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, msg = _check(f"http://127.0.0.1:{port}/x.pth")
    assert code == 2 and "(ConnectionRefusedError)" in msg
    assert f"cannot read http://127.0.0.1:{port}/x.pth: http://127.0.0.1:{port}/x.pth" not in msg


def test_s3_without_credentials_says_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("s3fs")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    code, msg = _check("s3://weights/mae_pretrain_vit_base.pth")
    assert code == 2
    assert "cannot read s3://weights/mae_pretrain_vit_base.pth: no S3 credentials found" in msg
    assert "AWS_ACCESS_KEY_ID" in msg and "NoCredentialsError" not in msg
