"""The demo flow through the library (vitbench.flows.demo): train, register, champion, ONNX + parity,
POST /detect; a failing step is named; flags that cannot work are refused before anything runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from tiny import tiny

from vitbench.flows.demo import (
    PIPELINE_STEPS,
    DemoError,
    DemoReporter,
    DemoRequest,
    PipelineStepError,
    run_demo,
    run_pipeline,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TINY = tiny(max_iters=3, checkpoint_period=3)


class Recorder(DemoReporter):
    """Keeps what the flow reported, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def data_ready(self, data: Path, counts: dict[str, int]) -> None:
        self.events.append(f"data {counts['train']}/{counts['val']}")

    def study_done(self, study: Path, outcome: object) -> None:
        self.events.append("study")

    def step(self, number: int, title: str) -> AbstractContextManager[None]:
        @contextmanager
        def done() -> Iterator[None]:
            yield
            self.events.append(f"step {number}")

        return done()


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """The demo sets torch's thread count for the process; give the rest of the session its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _request(tmp_path: Path, **kw: object) -> DemoRequest:
    base: dict[str, object] = {
        "out": tmp_path / "demo",
        "home": tmp_path / "home",
        "images": 10,
        "inits": ("random",),
        "overrides": TINY,
        "progress": False,
    }
    return DemoRequest(**{**base, **kw})  # type: ignore[arg-type]


def test_demo_flow_runs_the_whole_pipeline(tmp_path: Path) -> None:
    from vitbench.registry.client import RegistryClient

    rec = Recorder()
    outcome = run_demo(_request(tmp_path), rec)
    assert rec.events == ["data 8/2", "study", *(f"step {n}" for n in range(1, PIPELINE_STEPS + 1))]
    assert list(outcome.study_outcome.trained) == ["random"] and not outcome.study_outcome.failed
    home = tmp_path / "home"
    info = RegistryClient.embedded(home).resolve("vitbench-demo@champion")
    assert info.version == "1" and info.tags["init"] == "random"
    assert info.tags["export.onnx.path"] == "export/onnx" and info.tags["export.onnx.manifest_sha256"]
    result = outcome.pipeline
    assert result is not None
    assert (result.version_ref, result.champion_ref) == ("vitbench-demo/1", "vitbench-demo@champion")
    assert result.parity.passed and len(result.parity.images) == 6
    assert result.score_threshold == 0.5 and result.home == home
    assert all(float(d["score"]) >= 0.5 for d in result.detections)
    assert result.image.parent == tmp_path / "demo" / "data" / "val"
    assert not list((tmp_path / "demo").rglob("*.tmp*")), "half-written files were left behind"


def test_demo_flow_refuses_flags_that_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="--no-pipeline"):
        run_demo(_request(tmp_path, register=False))
    with pytest.raises(DemoError, match="'random' run"):
        run_demo(_request(tmp_path, inits=("mae",)))
    assert not (tmp_path / "demo").exists(), "nothing is trained when the flags cannot work"
    (tmp_path / "demo").mkdir()
    with pytest.raises(DemoError, match="was not made by `vitbench demo`"):
        run_demo(_request(tmp_path))


def test_a_failed_step_is_named(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(PipelineStepError) as exc:
        run_pipeline(run_dir=tmp_path / "run", data=tmp_path / "data", home=tmp_path / "home", model_name="m")
    assert exc.value.number == 1
    step = "demo pipeline step 1/4 (find the registered version of run/model_final.pth) failed"
    assert step in str(exc.value)
    assert "did not finish" in exc.value.reason
