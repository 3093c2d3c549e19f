"""Resume gives the same run as no interruption: in-process stop/resume (fast) and kill -9 (slow)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from engine_tiny import TINY_OVERRIDES

from vitbench.trainer.engine.checkpoint import (
    FINAL_NAME,
    list_checkpoints,
    load_checkpoint,
    load_inference_model,
)
from vitbench.trainer.engine.hooks import Hook, JsonlMetricsHook, LoopState
from vitbench.trainer.engine.loop import TrainConfig, Trainer, TrainingInterruptedError, TrainingSetupError
from vitbench.trainer.recipes import apply_overrides, get_recipe

RECIPE = apply_overrides(get_recipe("bench-tiny"), TINY_OVERRIDES)


class StopAt(Hook):
    def __init__(self, trainer_ref: list[Trainer], at: int) -> None:
        self.ref, self.at = trainer_ref, at

    def after_step(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        if loop.iteration == self.at:
            self.ref[0].request_stop()


def _cfg(data: Path, out: Path, resume: bool = False) -> TrainConfig:
    return TrainConfig(
        recipe=RECIPE, init="random", data_root=data, out_dir=out, resume=resume, device="cpu", log_period=1
    )


@pytest.fixture(scope="module")
def reference_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    Trainer(_cfg(tiny_data, out), [JsonlMetricsHook()]).run()
    return out


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_run_outputs(reference_run: Path) -> None:
    names = {p.name for p in reference_run.iterdir()}
    assert {"recipe.json", "metrics.jsonl", "checkpoints", FINAL_NAME, "eval.json"} <= names
    final = load_checkpoint(reference_run / FINAL_NAME)
    assert set(final) == {"model", "recipe", "meta"}
    assert (
        final["meta"]["iteration"] == 6
        and final["meta"]["num_classes"] == 4
        and final["meta"]["init"] == "random"
    )
    assert final["meta"]["class_names"] == ["circle", "rectangle", "triangle", "star"]
    lines = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert all({"epoch", "lr", "total_loss", "loss_mask"} <= r.keys() for r in lines if r["type"] == "train")
    ev = json.loads((reference_run / "eval.json").read_text())
    assert {"bbox/AP", "bbox/AP50", "segm/AP"} <= ev["metrics"].keys()
    model, recipe, meta = load_inference_model(reference_run / FINAL_NAME)
    assert not model.training and recipe.name == "bench-tiny" and meta["iteration"] == 6
    with torch.no_grad():
        out = model([torch.rand(3, 50, 60)])[0]
    assert out["boxes"].shape[-1] == 4 and out["masks"].shape[-2:] == (50, 60)


def test_stop_then_resume_matches_uninterrupted(reference_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    ref: list[Trainer] = []
    t = Trainer(_cfg(tiny_data, tmp_path), [JsonlMetricsHook(), StopAt(ref, 3)])
    ref.append(t)
    with pytest.raises(TrainingInterruptedError) as info:
        t.run()
    assert info.value.iteration == 3 and info.value.checkpoint is not None
    assert [it for it, _ in list_checkpoints(tmp_path / "checkpoints")] == [3, 2]
    with pytest.raises(TrainingSetupError, match="--resume"):
        Trainer(_cfg(tiny_data, tmp_path)).run()  # refuses to overwrite a run silently
    result = Trainer(_cfg(tiny_data, tmp_path, resume=True), [JsonlMetricsHook()]).run()
    assert result.iteration == 6
    _same_weights(reference_run / FINAL_NAME, tmp_path / FINAL_NAME)
    ref_eval = json.loads((reference_run / "eval.json").read_text())["metrics"]
    assert result.metrics == pytest.approx(ref_eval, abs=1e-6)
    its = [json.loads(x)["iteration"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [i for i in its] == sorted(its) and its.count(3) == 1  # no duplicated tail after resume


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "vitbench.cli.main", "train", "--recipe", "bench-tiny", "--data", str(data)]
    cmd += ["--out", str(out), "--no-register", "--no-progress", "--device", "cpu", "--log-period", "1"]
    for o in TINY_OVERRIDES:
        cmd += ["--set", o.replace("solver.max_iters=6", "solver.max_iters=10")]
    return cmd + list(extra)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}


def _wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    t0 = time.time()
    while not list(path_glob.glob(pattern)):
        assert proc.poll() is None, "training ended before the checkpoint appeared"
        assert time.time() - t0 < timeout, "no checkpoint in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted_subprocess(tiny_data: Path, tmp_path: Path) -> None:
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_train_cmd(tiny_data, ref_out), check=True, env=_env(), capture_output=True, timeout=600)
    proc = subprocess.Popen(
        _train_cmd(tiny_data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for(out / "checkpoints", "model_0000004.pth", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / FINAL_NAME).exists()
    for _, p in list_checkpoints(out / "checkpoints"):  # every file with a final name is complete
        assert load_checkpoint(p)["iteration"] in (2, 4, 6, 8)
    done = subprocess.run(
        _train_cmd(tiny_data, out, "--resume", "--json"), env=_env(), capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    resumed = json.loads(done.stdout)
    ref = json.loads((ref_out / "eval.json").read_text())
    assert resumed["iteration"] == ref["iteration"] == 10
    assert resumed["metrics"] == pytest.approx(ref["metrics"], abs=0.5)  # AP points
    _same_weights(ref_out / FINAL_NAME, out / FINAL_NAME)


@pytest.mark.slow
def test_sigterm_saves_and_exits_143(tiny_data: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _train_cmd(tiny_data, tmp_path), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_for(tmp_path / "checkpoints", "model_0000002.pth", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert b"--resume" in err
    saved = list_checkpoints(tmp_path / "checkpoints")
    assert saved and saved[0][0] >= 2 and not (tmp_path / FINAL_NAME).exists()


def test_grad_accumulation_and_bf16_autocast_run_to_the_end(tiny_data: Path, tmp_path: Path) -> None:
    recipe = apply_overrides(RECIPE, ["solver.max_iters=2", "solver.grad_accum=2", "solver.amp=bf16"])
    cfg = TrainConfig(
        recipe=recipe, init="random", data_root=tiny_data, out_dir=tmp_path, device="cpu", log_period=1
    )
    result = Trainer(cfg, [JsonlMetricsHook()]).run()
    assert result.iteration == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["type"] == "train"]
    assert [x["iteration"] for x in train] == [1, 2] and all(math.isfinite(x["total_loss"]) for x in train)
    assert train[0]["epoch"] == pytest.approx(2 / 9)  # batch_size counts all micro-batches of a step
