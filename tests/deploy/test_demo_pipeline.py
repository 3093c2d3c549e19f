"""`vitbench demo` through the command line: its printed summary (slow: the flow itself is tested through
the library in tests/flows/test_demo_flow.py) and the flags it refuses with exit code 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny import sets
from typer.testing import CliRunner

from vitbench.cli.main import app

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SETS = sets(max_iters=3, checkpoint_period=3)
runner = CliRunner()


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """The demo sets torch's thread count for the process; give the rest of the session its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _demo(tmp_path: Path, *extra: str) -> tuple[int, str]:
    args = ["demo", "--out", str(tmp_path / "demo"), "--home", str(tmp_path / "home")]
    res = runner.invoke(
        app, [*args, "--images", "10", "--pretrain", "none", "--inits", "random", *SETS, *extra]
    )
    return res.exit_code, res.output


@pytest.mark.slow
def test_demo_prints_the_whole_pipeline(tmp_path: Path) -> None:
    from vitbench.registry.client import RegistryClient

    code, output = _demo(tmp_path)
    assert code == 0, output
    for n in range(1, 5):
        assert f"✓ pipeline {n}/4" in output
    home = tmp_path / "home"
    info = RegistryClient.embedded(home).resolve("vitbench-demo@champion")
    assert info.version == "1" and info.tags["init"] == "random"
    assert info.tags["export.onnx.path"] == "export/onnx" and info.tags["export.onnx.manifest_sha256"]
    flat = " ".join(output.split())
    assert "vitbench-demo/1 = vitbench-demo@champion" in flat
    assert "parity: passed on 6/6 images" in flat
    assert "detection(s) with score ≥ 0.5" in flat
    assert f"vitbench serve --model vitbench-demo@champion --home {home}" in flat
    assert "curl -s -X POST -H 'content-type: image/jpeg' --data-binary @" in flat
    assert "http://127.0.0.1:8000/detect" in flat
    assert not list((tmp_path / "demo").rglob("*.tmp*")), "half-written files were left behind"


def test_flags_that_cannot_work_exit_2(tmp_path: Path) -> None:
    code, output = _demo(tmp_path, "--no-register")
    assert code == 2 and "--no-pipeline" in output
    code, output = _demo(tmp_path, "--pretrain", "mae,beit")
    assert code == 2 and "unknown pre-training method 'beit'" in output
    code, output = _demo(tmp_path, "--pretrain", "mae", "--weights", "mae=/nowhere/mae.pth")
    assert code == 2 and "both pre-trained by the demo and given --weights" in " ".join(output.split())
    assert not (tmp_path / "demo").exists(), "nothing is trained when the flags cannot work"
