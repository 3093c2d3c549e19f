"""A real uvicorn server: the body limit on the wire, and `vitbench serve` draining on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from service_helpers import image_bytes, running_server, settings_for

from vitbench.service.app import create_app

pytestmark = pytest.mark.integration


def _status_line(sock: socket.socket) -> str:
    sock.settimeout(10)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_oversized_bodies_are_refused_on_the_wire(fake_model_dir: Path) -> None:
    limit = 64 * 1024
    with running_server(create_app(settings_for(fake_model_dir, max_body_bytes=limit))) as base:
        host, port = urlsplit(base).hostname, urlsplit(base).port
        assert host and port
        # 1) A declared 10 GB body: answered from the headers, before a single body byte is sent.
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 10000000000\r\n\r\n"
            )
            assert _status_line(sock) == "HTTP/1.1 413 Request Entity Too Large"
        # 2) A chunked upload without a length: refused once the count passes the limit.
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n" % 16384 + b"\0" * 16384 + b"\r\n"
            sent = 0
            sock.setblocking(False)
            answer = b""
            while sent < 64 * 1024 * 1024 and not answer:
                with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                    sent += sock.send(chunk)
                try:
                    answer = sock.recv(4096)
                except BlockingIOError:
                    time.sleep(0.001)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
            assert sent < 64 * 1024 * 1024  # stopped long before the client would have finished
        ok = httpx.post(f"{base}/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
        assert ok.status_code == 200


def test_vitbench_serve_drains_on_sigterm(fake_model_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "VITBENCH_DRAIN_SECONDS": "3", "VITBENCH_PROVIDERS": "CPUExecutionProvider"}
    cmd = [
        sys.executable,
        "-m",
        "vitbench.cli.main",
        "serve",
        "--model-dir",
        str(fake_model_dir),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert httpx.get(f"{base}/readyz").status_code == 503
        during = httpx.post(f"{base}/detect", content=image_bytes(), headers={"content-type": "image/jpeg"})
        assert during.status_code == 200  # still serving while load balancers take it out
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read() if proc.stdout else ""
    assert '"draining: readiness is now 503"' in output and '"stopped"' in output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_vitbench_serve_exits_when_the_model_cannot_load(tmp_path: Path) -> None:
    port = str(_free_port())
    result = subprocess.run(
        [sys.executable, "-m", "vitbench.cli.main", "serve", "--model-dir", str(tmp_path), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "the model could not be loaded" in result.stderr and "model.onnx" in result.stderr
