"""Everyday mistakes on the real ``vitbench`` app: one clear line, a nonzero exit, no traceback.

Covers ``--device`` (checked at start-up), a directory or a file where the other is expected, and
``--help`` at 80 columns (nothing cropped with "…"). Serving on a busy port is in ``test_serve_port``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from vitbench.cli.main import app

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), terminal_width=100)
    assert "Traceback" not in res.output, res.output
    return res.exit_code, " ".join(res.output.replace("│", " ").split())


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--recipe", "bench-tiny", "--data", "d", "--out", "o"],
        ["eval", "--data", "d", "--checkpoint", "c.pth"],
        ["bench", "run", "--inits", "random", "--data", "d", "--out", "o"],
    ],
)
@pytest.mark.parametrize(
    ("device", "needle"),
    [
        ("gpu", "device 'gpu' is not one of auto, cpu, cuda or cuda:N"),
        ("foo", "device 'foo' is not one of auto, cpu, cuda or cuda:N"),
        ("cuda:x", "is not one of"),
    ],
)
def test_device_must_be_auto_cpu_cuda_or_cuda_n(
    command: list[str], device: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, msg = _invoke(*command, "--device", device)
    assert code == 2 and needle in msg
    assert not (tmp_path / "o").exists(), "nothing is created for a refused command line"


def test_cuda_without_a_gpu_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    for device in ("cuda", "cuda:0", "CUDA:1"):
        code, msg = _invoke(
            "train", "--recipe", "bench-tiny", "--data", "d", "--out", "o", "--device", device
        )
        assert code == 2
        assert f"device {device!r} needs a CUDA GPU, but none is present on this machine" in msg
    assert not (tmp_path / "o").exists()


def test_a_directory_given_as_checkpoint_is_called_a_directory(tmp_path: Path) -> None:
    from vitbench.trainer.data.synth import SynthConfig, generate_dataset

    cfg = SynthConfig(min_image_size=48, max_image_size=64, min_object_size=14, max_object_size=36)
    generate_dataset(tmp_path / "data", 4, seed=1, cfg=cfg)
    code, msg = _invoke(
        "eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path / "data"), "--device", "cpu"
    )
    assert code == 2 and f"checkpoint {tmp_path} is a directory; expected a .pth file" in msg


def test_out_naming_an_existing_file_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    code, msg = _invoke("train", "--recipe", "bench-tiny", "--data", str(tmp_path), "--out", str(notes))
    assert code == 2 and f"{notes} is a file; expected a folder" in msg
    code, msg = _invoke("bench", "run", "--inits", "random", "--data", str(tmp_path), "--out", str(notes))
    assert code == 2 and f"{notes} is a file; expected a folder" in msg
    assert notes.read_text() == "keep me"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group`` (typer's click groups have ``commands``)."""
    out = [path]
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            out += _commands(sub, (*path, name))
    return out


def test_help_is_never_cropped_at_80_columns() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert ("bench", "submit") in commands and ("train",) in commands
    for path in commands:
        res = runner.invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
        assert res.exit_code == 0, (path, res.output)
        assert "…" not in res.output, f"`vitbench {' '.join(path)} --help` crops a word:\n{res.output}"
    flat = runner.invoke(app, ["train", "--help"], terminal_width=80, env={"COLUMNS": "80"}).output
    assert "--setsolver.max_iters=100" in "".join(flat.replace("│", "").split())  # folded, not cut
