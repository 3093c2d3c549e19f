"""A run is what it says it is: ``--resume`` and ``bench run`` never continue or keep a different run.

The CLI is driven through typer's runner on the real app (exit code, the message naming each
difference, no traceback); one tiny run is trained per module and everything else resumes it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.data.synth import generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inits"))
from inits_formats import mae_file  # the test helpers of the inits package
from tiny import TINY_SYNTH, sets

SETS = sets(max_iters=2, checkpoint_period=1, eval_period=2)
runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res.exit_code, " ".join(res.output.split())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("identity-data")
    generate_dataset(root, 6, seed=2, cfg=TINY_SYNTH)
    return root


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A finished random-init bench-tiny run, registered; returns (run folder, registry home, output)."""
    root = tmp_path_factory.mktemp("identity-run")
    out, home = root / "run", root / "home"
    args = ["train", "--recipe", "bench-tiny", "--data", str(data), "--out", str(out)]
    code, msg = _invoke(*args, "--home", str(home), "--no-progress", *SETS)
    assert code == 0, msg
    return out, home, msg


@pytest.fixture
def copied_run(trained: tuple[Path, Path, str], tmp_path: Path) -> Path:
    """A copy of the finished run, for a test to resume (or try to)."""
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    return out


def _train(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    base = ["train", "--data", str(data), "--out", str(out), "--no-register", "--no-progress", *SETS]
    return _invoke(*base, *extra)


def test_a_run_records_its_identity_and_says_what_it_registered(
    trained: tuple[Path, Path, str], data: Path
) -> None:
    out, _home, msg = trained
    identity = json.loads((out / "identity.json").read_text())
    recipe = json.loads((out / "recipe.json").read_text())
    assert identity["recipe"] == recipe and identity["init"] == "random"
    assert identity["weights"] is None and identity["weights_sha256"] is None
    assert identity["dataset"] == str(data.resolve()) and len(identity["dataset_sha256"]) == 64
    assert identity["code"]
    assert "registered vitbench-bench-tiny/1" in msg


def test_resume_refuses_another_recipe_or_override_naming_each_difference(
    copied_run: Path, data: Path
) -> None:
    out = copied_run
    before = sorted(p.name for p in (out / "checkpoints").iterdir())

    code, msg = _train(data, out, "--recipe", "bench-tiny", "--resume", "--set", "solver.lr=0.01")
    assert code == 2
    assert f"--resume would continue the run in {out} as a different run: solver.lr: 0.0005 → 0.01." in msg

    code, msg = _train(data, out, "--recipe", "vitdet-tiny", "--resume")
    assert code == 2, msg
    assert "name: bench-tiny → vitdet-tiny" in msg and "neck.kind: multiscale_fpn → simple_fpn" in msg
    assert "load_state_dict" not in msg
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before, "nothing was written"


def test_resume_refuses_another_init_and_weights(copied_run: Path, data: Path, tmp_path: Path) -> None:
    out = copied_run
    weights = tmp_path / "mae_tiny.pth"
    torch.save(mae_file(96, 4), weights)
    code, msg = _train(
        data, out, "--recipe", "bench-tiny", "--resume", "--init", "mae", "--weights", str(weights)
    )
    assert code == 2
    assert "init: random → mae" in msg and "weights: none → sha256 " in msg


def test_resume_of_the_same_run_is_accepted(copied_run: Path, data: Path) -> None:
    code, msg = _train(data, copied_run, "--recipe", "bench-tiny", "--resume")
    assert code == 0, msg


def test_bench_run_keeps_a_finished_run_only_when_it_is_the_one_asked_for(
    trained: tuple[Path, Path, str], data: Path, tmp_path: Path
) -> None:
    src, _home, _msg = trained
    study = tmp_path / "study"
    shutil.copytree(src, study / "random")
    eval_before = (study / "random" / "eval.json").read_bytes()
    bench = ["bench", "run", "--inits", "random", "--data", str(data), "--out", str(study), "--no-register"]

    code, msg = _invoke(*bench, "--recipe", "vitdet-tiny", "--no-progress", *SETS)
    assert code == 2
    assert "the study folder holds finished runs that differ from this request" in msg
    assert f"{study / 'random'}: " in msg and "name: bench-tiny → vitdet-tiny" in msg
    assert "choose another --out for this study" in msg
    assert (study / "random" / "eval.json").read_bytes() == eval_before

    code, msg = _invoke(*bench, "--recipe", "bench-tiny", "--no-progress", *SETS, "--set", "solver.lr=0.01")
    assert code == 2 and "solver.lr: 0.0005 → 0.01" in msg

    code, msg = _invoke(*bench, "--recipe", "bench-tiny", "--no-progress", *SETS)
    assert code == 0, msg
    assert "already finished" in msg and "keeping it" in msg


def test_failed_validation_leaves_no_run_folder(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    ann = bad / "annotations" / "instances_train.json"
    coco = json.loads(ann.read_text())
    coco["annotations"] = []
    ann.write_text(json.dumps(coco))
    out = tmp_path / "deep" / "run"
    code, msg = _train(bad, out, "--recipe", "bench-tiny")
    assert code == 2 and "no annotated object" in msg
    assert not out.exists() and not out.parent.exists()
    code, msg = _train(data, out, "--recipe", "bench-tiny", "--init", "mae", "--weights", str(tmp_path))
    assert code == 2 and "is a directory" in msg
    assert not out.parent.exists()
