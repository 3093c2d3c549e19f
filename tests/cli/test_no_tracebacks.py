"""Every command's error paths: a user mistake ends with a message and a nonzero exit, never a traceback.

Parametrized over every command of the app (the test fails when a command has no case here), each
with arguments that are wrong in an everyday way. Run through typer's runner: an exception escaping a
command would show up as ``result.exception`` (the runner swallows tracebacks), so that is checked too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from vitbench.cli.main import app

runner = CliRunner()

# {tmp}: an empty temporary folder; {file}: a text file in it; {missing}: a path that does not exist.
CASES: dict[tuple[str, ...], list[list[str]]] = {
    ("recipes",): [["--bogus"]],
    ("model",): [["nope"]],
    ("data",): [["nope"]],
    ("model", "summary"): [["--recipe", "bench-tinyy"], []],
    ("inits",): [["--bogus"]],
    ("inits", "check"): [
        ["--init", "dino", "--path", "{file}", "--recipe", "bench-tiny"],
        ["--init", "mae", "--path", "{file}", "--recipe", "bench-tiny"],
        ["--init", "mae", "--path", "{tmp}", "--recipe", "bench-tiny"],
        ["--init", "mae", "--path", "{missing}", "--recipe", "bench-tiny"],
    ],
    ("data", "synth"): [["--out", "{file}"], ["--out", "{file}/sub"], ["--out", "{tmp}", "--images", "1"]],
    ("data", "check"): [["--data", "{missing}"], ["--data", "{file}"], ["--data", "{tmp}"]],
    ("train",): [
        ["--recipe", "bench-tinyy", "--data", "{tmp}", "--out", "{tmp}/r"],
        ["--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{file}"],
        ["--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{tmp}/r", "--device", "gpu"],
        ["--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{tmp}/r", "--set", "solver.lr=abc"],
        ["--recipe", "bench-tiny", "--data", "{missing}", "--out", "{tmp}/r", "--no-register"],
        ["--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{tmp}/r", "--init", "dino"],
    ],
    ("eval",): [
        ["--checkpoint", "{tmp}", "--data", "{tmp}"],
        ["--checkpoint", "{missing}", "--data", "{missing}"],
        ["--checkpoint", "{file}", "--data", "{tmp}", "--device", "cuda:x"],
    ],
    ("bench",): [["nope"]],
    ("bench", "run"): [
        ["--inits", "random", "--recipe", "nope", "--data", "{tmp}", "--out", "{tmp}/s"],
        ["--inits", "dino", "--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{tmp}/s"],
        ["--inits", "", "--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{tmp}/s"],
        ["--inits", "random", "--recipe", "bench-tiny", "--data", "{tmp}", "--out", "{file}"],
    ],
    ("bench", "report"): [["--out", "{missing}"], ["--out", "{file}"]],
    ("bench", "render"): [
        ["--inits", "mae", "--recipe", "bench-b"],
        ["--inits", "random", "--recipe", "bench-b", "--set", "solver.max_iters=-5"],
        ["--inits", "random", "--recipe", "bench-b", "--shm-size", "lots"],
    ],
    ("bench", "submit"): [["--inits", "random", "--recipe", "bench-b"], ["--inits", "mae", "--recipe", "x"]],
    ("bench", "status"): [[]],
    ("bench", "logs"): [["random"]],
    ("bench", "cancel"): [["--yes"]],
    ("registry",): [["nope"]],
    ("registry", "list"): [[], ["--home", "{file}"]],
    ("registry", "show"): [["not a ref"], ["m@champion"]],
    ("registry", "promote"): [["not-a-ref"]],
    ("registry", "download"): [["m/1", "-o", "{file}"], ["m/1"]],
    ("export",): [["--model", "m@champion"], ["--model", "m@champion", "--format", "tflite"]],
    ("serve",): [["--model", "not a ref"], ["--model-dir", "{missing}"], ["--port", "0"]],
    ("pretrain",): [
        ["--method", "dino", "--recipe", "tiny", "--data", "{tmp}", "--out", "{tmp}/p"],
        ["--method", "mae", "--recipe", "huge", "--data", "{tmp}", "--out", "{tmp}/p"],
        ["--method", "mae", "--recipe", "tiny", "--data", "{missing}", "--out", "{tmp}/p", "--no-register"],
        ["--method", "mae", "--recipe", "tiny", "--data", "{tmp}", "--out", "{tmp}/p", "--no-register"],
        ["--method", "supervised", "--recipe", "tiny", "--data", "{tmp}", "--out", "{file}"],
        ["--method", "mae", "--recipe", "tiny", "--data", "{tmp}", "--out", "{tmp}/p", "--set", "solver.lr="],
        ["--method", "mae", "--recipe", "tiny", "--data", "{tmp}", "--out", "{tmp}/p", "--device", "gpu"],
    ],
    ("demo",): [["--inits", "dino", "--out", "{tmp}/demo", "--home", "{tmp}/home"]],
}


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path] if path else []
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            out += _commands(sub, (*path, name))
    return out


def test_every_command_has_error_cases() -> None:
    commands = set(_commands(typer.main.get_command(app)))
    assert commands - set(CASES) == set(), "add error cases for these commands"
    assert set(CASES) - commands == set(), "these commands no longer exist"


@pytest.mark.parametrize(
    ("command", "args"),
    [(c, a) for c, cases in CASES.items() for a in cases],
    ids=[f"{' '.join(c)}:{i}" for c, cases in CASES.items() for i in range(len(cases))],
)
def test_user_mistakes_exit_nonzero_without_a_traceback(
    command: tuple[str, ...], args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "VITBENCH_HOME", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("not what was expected\n")
    values = {"tmp": str(work), "file": str(work / "notes.txt"), "missing": str(work / "missing")}
    argv = [*command, *(a.format(**values) for a in args)]
    res = runner.invoke(app, argv, terminal_width=120)
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert res.output.strip(), "a failure says something"
