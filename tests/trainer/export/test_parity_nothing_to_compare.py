"""Parity needs detections to compare: empty outputs on both sides prove nothing.

When nothing reaches the model's score threshold, export checks parity again on a second graph at a
low threshold; when even that detects nothing, ``vitbench export`` fails with "nothing to compare".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitbench.registry.client import RegistryClient
from vitbench.trainer.engine.checkpoint import atomic_save
from vitbench.trainer.export.parity import run_parity
from vitbench.trainer.export.pipeline import PARITY_LOW_THRESHOLD, export_checkpoint
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import apply_overrides, get_recipe

CLASSES = ["circle", "rectangle"]
SMALL = ["input.image_size=64", "backbone.pretrain_img_size=64"]


def _checkpoint(path: Path, overrides: list[str], silence: bool = False) -> Path:
    """A bench-tiny checkpoint; ``silence`` makes the box classifier answer "background" everywhere."""
    torch.manual_seed(0)
    recipe = apply_overrides(get_recipe("bench-tiny"), [*SMALL, *overrides])
    model = build_detector(recipe, len(CLASSES))
    if silence:
        with torch.no_grad():
            bias = model.roi_heads.box_predictor.cls_score.bias  # (1 + classes,), index 0 = background
            bias.fill_(-50.0)
            bias[0] = 50.0
    meta = {"init": "random", "num_classes": 2, "class_names": CLASSES, "dataset": "synth", "iteration": 0}
    atomic_save({"model": model.state_dict(), "recipe": recipe.model_dump(mode="json"), "meta": meta}, path)
    return path


def _empty(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        np.zeros((0, 28, 28), np.float32),
    )


def test_two_empty_outputs_do_not_pass() -> None:
    image = np.zeros((1, 3, 8, 8), np.float32)
    report = run_parity(_empty, _empty, [("a", image), ("b", image)], "test", 0.05)
    assert all(im.passed for im in report.images)  # nothing differs on any image ...
    assert report.compared == 0 and not report.passed  # ... but nothing was compared either
    assert report.score_threshold == 0.05


@pytest.mark.slow  # two exports; the CLI test below runs the same fallback (to an empty result)
def test_nothing_above_the_model_threshold_is_checked_at_a_low_one(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "model_final.pth", ["heads.score_thresh=1.0"])  # nothing scores > 1
    outcome = export_checkpoint(ckpt, tmp_path / "out", parity_count=1)
    report = outcome.parity
    assert report.passed and report.compared > 0
    assert report.score_threshold == PARITY_LOW_THRESHOLD
    assert outcome.manifest.score_threshold == 1.0, "the exported model keeps its own threshold"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx"], "no parity graph left"


def test_export_of_a_model_that_detects_nothing_fails_with_nothing_to_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitbench.cli.main import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    client = RegistryClient.embedded(home)
    run_id = client.start_run("parity-tests")
    ckpt = _checkpoint(tmp_path / "model_final.pth", [], silence=True)
    client.register_version("silent", run_id, ckpt, {"init": "random", "recipe": "bench-tiny"})
    res = CliRunner().invoke(
        app, ["export", "--model", "silent/1", "--home", str(home), "--parity-images", "1"]
    )
    flat = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert (
        "nothing to compare: neither side detected anything on 3 images at score ≥ 0.001 "
        "(is the model trained?) for silent/1; nothing was uploaded"
    ) in flat
    assert "export.onnx.path" not in client.resolve("silent/1").tags
