"""The demo flow through the library (vitbench.flows.demo): pre-train, fine-tune from the registered
pre-training, pick the winner, register, champion, ONNX + parity, POST /detect; a failing step is named;
flags that cannot work are refused before anything runs."""

from __future__ import annotations

import json
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
    PretrainSummary,
    pick_winner,
    run_demo,
    run_pipeline,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TINY = tiny(max_iters=3, checkpoint_period=3)
PRETRAIN_TINY = ("solver.max_iters=2", "solver.batch_size=8", "data.num_workers=0")


class Recorder(DemoReporter):
    """Keeps what the flow reported, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def data_ready(self, data: Path, counts: dict[str, int]) -> None:
        self.events.append(f"data {counts['train']}/{counts['val']}/{counts.get('unlabeled', 0)}")

    def pretrain_done(self, summary: PretrainSummary) -> None:
        self.events.append(f"pretrained {summary.method} {summary.registered}")

    def winner(self, init: str, box_ap: float) -> None:
        self.events.append(f"winner {init}")

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
        "val_fraction": 0.2,
        "unlabeled": 16,
        "pretrain": (),
        "inits": ("random",),
        "overrides": TINY,
        "pretrain_overrides": PRETRAIN_TINY,
        "progress": False,
    }
    return DemoRequest(**{**base, **kw})  # type: ignore[arg-type]


def test_demo_flow_runs_the_whole_pipeline(tmp_path: Path) -> None:
    from vitbench.registry.client import RegistryClient

    rec = Recorder()
    outcome = run_demo(_request(tmp_path), rec)
    steps = [f"step {n}" for n in range(1, PIPELINE_STEPS + 1)]
    assert rec.events == ["data 8/2/0", "study", "winner random", *steps]
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


@pytest.mark.slow
def test_demo_pretrains_and_fine_tunes_from_the_registered_pretraining(tmp_path: Path) -> None:
    """mae is pre-trained and registered, its init fine-tuned from the registry reference next to
    random (two processes); the pipeline runs on the run with the higher final box AP."""
    from vitbench.registry.client import RegistryClient
    from vitbench.trainer.rundir import RunDir

    rec = Recorder()
    outcome = run_demo(_request(tmp_path, pretrain=("mae",), jobs=2), rec)
    assert rec.events[:3] == ["data 8/2/16", "pretrained mae vitbench-demo-mae/1", "study"]
    assert sorted(outcome.study_outcome.trained) == ["mae", "random"] and not outcome.study_outcome.failed
    assert outcome.pretrained["mae"].release.name == "mae_pretrain_vit_tiny.pth"
    client = RegistryClient.embedded(tmp_path / "home")
    pre = client.resolve("vitbench-demo-mae/1")
    assert pre.tags["kind"] == "pretrain" and pre.tags["method"] == "mae"
    detectors = {v.tags["init"]: v for v in client.list_versions("vitbench-demo")}
    assert detectors["mae"].tags["pretrained_from"] == "vitbench-demo-mae/1"
    assert detectors["mae"].tags["pretrained_sha256"] == pre.tags["sha256"]
    assert "pretrained_from" not in detectors["random"].tags
    aps = {}
    for init in ("random", "mae"):
        summary = json.loads(RunDir(tmp_path / "demo" / "study" / init).eval.read_text(encoding="utf-8"))
        aps[init] = summary["metrics"]["bbox/AP"]
    best = max(aps, key=lambda i: (aps[i], i == "random"))  # a tie goes to the first init listed
    assert outcome.winner == best and f"winner {best}" in rec.events
    assert client.resolve("vitbench-demo@champion").tags["init"] == best
    assert (tmp_path / "demo" / "logs" / "pretrain-mae.log").is_file()


def test_demo_flow_refuses_flags_that_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="--no-pipeline"):
        run_demo(_request(tmp_path, register=False))
    with pytest.raises(DemoError, match="unknown pre-training method 'beit'"):
        run_demo(_request(tmp_path, pretrain=("beit",)))
    with pytest.raises(DemoError, match="'mae' is both pre-trained by the demo and given --weights"):
        run_demo(_request(tmp_path, pretrain=("mae",), weights={"mae": "/x/mae.pth"}))
    with pytest.raises(DemoError, match="nothing to fine-tune"):
        run_demo(_request(tmp_path, inits=()))
    with pytest.raises(DemoError, match="--unlabeled"):
        run_demo(_request(tmp_path, pretrain=("mae",), unlabeled=0))
    assert not (tmp_path / "demo").exists(), "nothing is trained when the flags cannot work"
    (tmp_path / "demo").mkdir()
    with pytest.raises(DemoError, match="was not made by `vitbench demo`"):
        run_demo(_request(tmp_path))


def test_the_winner_is_the_highest_final_box_ap(tmp_path: Path) -> None:
    for init, ap in (("random", 10.0), ("mae", 25.0), ("supervised", 20.0)):
        (tmp_path / init).mkdir()
        (tmp_path / init / "eval.json").write_text(json.dumps({"metrics": {"bbox/AP": ap}}))
    (tmp_path / "mocov3").mkdir()  # started, never finished: not a candidate
    assert pick_winner(tmp_path, ["random", "mae", "supervised", "mocov3"]) == ("mae", 25.0)
    assert pick_winner(tmp_path, ["mocov3"]) is None


def test_a_failed_step_is_named(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(PipelineStepError) as exc:
        run_pipeline(run_dir=tmp_path / "run", data=tmp_path / "data", home=tmp_path / "home", model_name="m")
    assert exc.value.number == 1
    step = "demo pipeline step 1/4 (find the registered version of run/model_final.pth) failed"
    assert step in str(exc.value)
    assert "did not finish" in exc.value.reason
