"""Ctrl-C is handled like SIGTERM: save, print the resume command, exit 130; a second one exits at once.
Wall time adds up over the sessions of a resumed run. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitbench.trainer.data.synth import SynthConfig, generate_dataset

TINY = [
    "input.image_size=64",
    "backbone.pretrain_img_size=64",
    "solver.batch_size=2",
    "solver.warmup_iters=1",
    "solver.checkpoint_period=1000",
    "solver.eval_period=1000",
    "heads.rpn_batch_size_per_image=32",
    "heads.roi_batch_size_per_image=16",
    "data.num_workers=0",
]


def _vitbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "vitbench.cli.main", *args]


def test_a_second_interrupt_exits_at_once() -> None:
    """The first signal asks the trainer to stop; the second exits with 128 + signal, no saving."""
    script = textwrap.dedent(
        """
        import os, signal, time
        from vitbench.trainer.runs import _stop_on_signals

        class Trainer:
            def request_stop(self):
                print("stop requested", flush=True)

        with _stop_on_signals(Trainer()):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
            print("not reached", flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130
    assert proc.stdout.splitlines() == ["stop requested"]
    assert "second interrupt: exiting now without saving" in proc.stderr


@pytest.mark.slow  # trains for real in a subprocess until the signal arrives, then resumes to the end
def test_ctrl_c_saves_prints_the_resume_command_and_wall_time_adds_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = SynthConfig(min_image_size=48, max_image_size=64, min_object_size=14, max_object_size=36)
    generate_dataset(data, 6, seed=2, cfg=cfg)
    out = tmp_path / "run"
    sets = [a for o in TINY for a in ("--set", o)]
    args = ["train", "--recipe", "bench-tiny", "--data", str(data), "--out", str(out), "--no-register"]
    cmd = _vitbench(*args, "--json", "--log-period", "1", *sets, "--set", "solver.max_iters=12")
    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the record stream: wait for the second training step
        lines.append(line)
        if '"iteration": 2' in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted (SIGINT): saved iteration" in rest and "Traceback" not in rest
    resume = next(line for line in rest.splitlines() if line.startswith("resume with: "))
    assert resume.startswith("resume with: vitbench train --recipe bench-tiny") and resume.endswith(
        "--resume"
    )
    (ckpt,) = (out / "checkpoints").iterdir()
    import torch

    first = torch.load(ckpt, weights_only=True)
    assert first["iteration"] >= 2 and first["wall_time_s"] > 0

    # finish the run in a second session: the recorded wall time covers both sessions
    done = subprocess.run(
        _vitbench(*args, *sets, "--set", "solver.max_iters=12", "--resume", "--no-progress"),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "eval.json").read_text())
    assert summary["iteration"] == 12 and summary["wall_time_s"] > first["wall_time_s"]
