"""The training use cases through the library (vitbench.trainer.runs): a study that goes on after one
init fails, and a checkpoint evaluated again gives the AP its run reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import TINY_SYNTH, tiny

from vitbench.trainer.data.synth import generate_dataset
from vitbench.trainer.inits import InitError
from vitbench.trainer.recipes import RecipeError
from vitbench.trainer.runs import (
    EvaluationError,
    RunRequest,
    StudyEvent,
    StudyRequest,
    evaluate_checkpoint,
    run_study,
    train_run,
)

TINY = tiny(max_iters=2, checkpoint_period=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runsdata")
    generate_dataset(root, 8, seed=5, cfg=TINY_SYNTH)
    return root


def test_study_reports_skips_and_failures_and_goes_on(data: Path, tmp_path: Path) -> None:
    events: list[StudyEvent] = []
    request = StudyRequest(
        inits=("mae", "beit", "random"),
        recipe="bench-tiny",
        data=data,
        out=tmp_path,
        weights={"mae": str(tmp_path / "missing.pth")},
        overrides=TINY,
        device="cpu",
        progress=False,
    )
    outcome = run_study(request, env={}, on_event=events.append)
    assert [(e.kind, e.init) for e in events] == [("failed", "mae"), ("skipped", "beit")]
    assert "missing.pth" in outcome.failed["mae"] and "VITBENCH_WEIGHTS_BEIT" in events[1].detail
    assert list(outcome.trained) == ["random"] and outcome.trained["random"].iteration == 2
    assert (tmp_path / "random" / "eval.json").is_file() and not (tmp_path / "mae" / "eval.json").exists()
    again: list[StudyEvent] = []
    run_study(request, env={}, on_event=again.append)  # a finished run is kept, not trained again
    assert ("kept", "random") in [(e.kind, e.init) for e in again]

    ckpt = tmp_path / "random" / "model_final.pth"
    ev = evaluate_checkpoint(ckpt, data, "val", "cpu")
    trained = json.loads((tmp_path / "random" / "eval.json").read_text())["metrics"]
    assert ev.metrics == pytest.approx(trained, abs=1e-6)
    assert json.loads(ev.file.read_text()) == ev.payload()
    with pytest.raises(EvaluationError, match="problem"):
        evaluate_checkpoint(ckpt, tmp_path / "nowhere", "val", "cpu")


def test_user_mistakes_are_domain_errors_before_training(data: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeError):
        train_run(RunRequest(recipe="no-such-recipe", data=data, out=tmp_path / "a"), env={})
    with pytest.raises(RecipeError, match=r"solver\.nope"):
        train_run(
            RunRequest(recipe="bench-tiny", data=data, out=tmp_path / "b", overrides=("solver.nope=1",))
        )
    with pytest.raises(InitError):
        run_study(StudyRequest(inits=("nope",), recipe="bench-tiny", data=data, out=tmp_path), env={})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
