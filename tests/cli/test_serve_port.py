"""``vitbench serve`` on a port that is taken: exit 3 with the reason as the last line, before loading."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def test_busy_port_fails_first_and_last(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # an empty folder: the model would fail to load, but the port is checked before anything loads
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vitbench.cli.main",
                "serve",
                "--model-dir",
                str(tmp_path),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server is listening there; stop it or pick another --port)"
    )
    assert "Traceback" not in proc.stderr
    assert "loading model" not in proc.stderr and "model ready" not in proc.stderr
