"""Pre-training runs on the one training engine: stop + --resume gives the uninterrupted run's weights,
MoCo v3's momentum encoder follows its EMA, the run folder is guarded, bad data is a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vitbench.trainer.data.synth import SynthConfig, generate_pretrain_images
from vitbench.trainer.engine.hooks import Hook
from vitbench.trainer.engine.loop import TrainingInterruptedError
from vitbench.trainer.pretrain.flow import PretrainError, PretrainRun, run_pretraining

SMOKE = ["solver.batch_size=8", "solver.max_iters=4", "solver.checkpoint_period=2", "data.num_workers=0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrain-engine")
    generate_pretrain_images(root, 24, 1, SynthConfig(num_categories=3, max_objects=3))
    return root


class _StopAt(Hook):
    """Ask the engine to stop (as SIGTERM does) once ``step`` steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_iteration(self, loop: Any) -> None:
        if loop.iteration == self.step:
            loop.request_stop()


def _run(method: str, data: Path, out: Path, **kw: Any) -> Any:
    return run_pretraining(
        PretrainRun(method=method, recipe="tiny", data=data, out=out, overrides=SMOKE, device="cpu", **kw)
    )


def _final(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", ["mae", pytest.param("mocov3", marks=pytest.mark.slow)])
def test_interrupt_and_resume_equals_an_uninterrupted_run(method: str, images: Path, tmp_path: Path) -> None:
    straight = _run(method, images / "unlabeled", tmp_path / "a")
    assert straight.iteration == 4
    with pytest.raises(TrainingInterruptedError) as stopped:
        _run(method, images / "unlabeled", tmp_path / "b", hooks=[_StopAt(2)])
    assert stopped.value.iteration == 2 and stopped.value.checkpoint is not None
    resumed = _run(method, images / "unlabeled", tmp_path / "b", resume=True)
    assert resumed.iteration == 4
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert [i for i, _ in resumed.files] == [i for i, _ in straight.files]
    summary = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert summary["method"] == method and summary["iteration"] == 4
    if method == "mocov3":  # the momentum encoder is an EMA that lags the base encoder
        key = "blocks.0.attn.qkv.weight"
        assert not torch.equal(a[f"base_encoder.{key}"], a[f"momentum_encoder.{key}"])
        # the frozen patch projection stays the random one in both (up to the EMA's rounding)
        torch.testing.assert_close(
            a["momentum_encoder.patch_embed.proj.weight"], a["base_encoder.patch_embed.proj.weight"]
        )


def test_run_folder_guard_and_clear_data_errors(images: Path, tmp_path: Path) -> None:
    _run("mae", images / "unlabeled", tmp_path / "run")
    with pytest.raises(PretrainError, match="--resume"):
        _run("mae", images / "unlabeled", tmp_path / "run")
    with pytest.raises(PretrainError, match="not an ImageFolder tree"):
        _run("supervised", images / "unlabeled", tmp_path / "sup")
    with pytest.raises(PretrainError, match="no images found"):
        _run("mae", tmp_path / "run" / "checkpoints", tmp_path / "empty")
    with pytest.raises(PretrainError, match="fewer than one batch"):
        run_pretraining(
            PretrainRun(
                method="mae",
                recipe="tiny",
                data=images / "unlabeled",
                out=tmp_path / "big",
                device="cpu",
                overrides=["solver.batch_size=512", "solver.max_iters=1"],
            )
        )
