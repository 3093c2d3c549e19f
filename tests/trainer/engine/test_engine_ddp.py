"""Two-process DDP on CPU (gloo) through torchrun: trains, evaluates, only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from engine_tiny import TINY_OVERRIDES

from vitbench.trainer.engine.checkpoint import FINAL_NAME, list_checkpoints, load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
    ]
    cmd += [
        "-m",
        "vitbench.cli.main",
        "train",
        "--recipe",
        "bench-tiny",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
    ]
    cmd += ["--no-register", "--no-progress", "--device", "cpu", "--log-period", "1", "--json"]
    for o in TINY_OVERRIDES:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    # exactly one JSON result on stdout (rank 1 prints nothing)
    result = json.loads(done.stdout)
    assert result["iteration"] == 6 and "bbox/AP" in result["metrics"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    its = [x["iteration"] for x in lines if x["type"] == "train"]
    assert its == [1, 2, 3, 4, 5, 6]  # one writer: no duplicated lines
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "checkpoints",
            "eval.json",
            "identity.json",
            "load_report.json",
            "metrics.jsonl",
            "model_final.pth",
            "recipe.json",
        ]
    )
    assert [it for it, _ in list_checkpoints(out / "checkpoints")] == [4, 2]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left
    final = load_checkpoint(out / FINAL_NAME)
    assert not any(k.startswith("module.") for k in final["model"])  # saved unwrapped from DDP
    ev = json.loads((out / "eval.json").read_text())
    assert ev["metrics"] == pytest.approx(result["metrics"])
    # epochs count the global batch (2 images per step over both ranks)
    assert ev["epoch"] == pytest.approx(6 * 2 / 9)
