"""Training from a pre-trained initialization through the command line, checked by value.

``vitbench train --init mae --weights FILE`` (as a user runs it) must load the file, train from it (the
loss falls, every parameter moves, the parts that get no gradient and no decay stay exactly where the
file put them), record the init's load report next to the run, and give every parameter group the lr of
detectron2's layer-decay rule. ``vitbench bench run`` must take the weights from ``VITBENCH_WEIGHTS_<INIT>``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from d2_reference import d2_vit_lr_decay_rate
from inits_formats import mae_file
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.data.synth import SynthConfig, generate_dataset
from vitbench.trainer.engine.checkpoint import list_checkpoints, load_checkpoint
from vitbench.trainer.engine.schedule import lr_factor

C, DEPTH = 96, 4  # vitdet-tiny widths
LR, WD, RATE, ITERS = 1e-3, 0.05, 0.7, 8
# 64-px canvas; two training images seen every step without augmentation, so the loss has one target.
SETS = [
    "input.image_size=64",
    "backbone.pretrain_img_size=64",
    "solver.batch_size=2",
    f"solver.max_iters={ITERS}",
    "solver.warmup_iters=2",
    f"solver.checkpoint_period={ITERS - 1}",
    "solver.eval_period=0",
    f"solver.lr={LR}",
    f"solver.weight_decay={WD}",
    f"solver.layer_decay={RATE}",
    "heads.rpn_batch_size_per_image=32",
    "heads.roi_batch_size_per_image=16",
    "heads.detections_per_img=10",
    "data.num_workers=0",
    "data.train_scale_range=1,1",
    "data.hflip_prob=0",
]
ARGS = [arg for s in SETS for arg in ("--set", s)]
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two-images")
    cfg = SynthConfig(min_image_size=48, max_image_size=64, min_object_size=14, max_object_size=36)
    assert generate_dataset(root, 3, seed=3, cfg=cfg, val_fraction=0.34) == {"train": 2, "val": 1}
    return root


@pytest.fixture(scope="module")
def mae_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An MAE encoder file (published names, 14x14 pos_embed) and its tensors."""
    file = mae_file(C, DEPTH, seed=11)
    path = tmp_path_factory.mktemp("weights") / "mae_pretrain_vit_tiny.pth"
    torch.save(file, path)
    return path, file["model"]


@pytest.fixture(scope="module")
def mae_run(
    data: Path, mae_weights: tuple[Path, dict[str, torch.Tensor]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("mae-run") / "run"
    args = ["train", "--recipe", "vitdet-tiny", "--init", "mae", "--weights", str(mae_weights[0])]
    args += ["--data", str(data), "--out", str(out), "--no-register", "--no-progress", "--device", "cpu"]
    res = runner.invoke(app, [*args, "--log-period", "1", *ARGS])
    assert res.exit_code == 0, res.output
    return out


def _train_records(run: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["type"] == "train"]


def test_cli_run_records_the_load_report_of_its_init(
    mae_run: Path, mae_weights: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    report = json.loads((mae_run / "load_report.json").read_text())
    assert report["ok"] and report["init"] == "mae" and report["source"] == str(mae_weights[0])
    vit_keys = {f"backbone.net.{k}" for k in mae_weights[1] if k.startswith(("blocks.", "patch_embed."))}
    assert vit_keys | {"backbone.net.pos_embed"} == set(report["loaded"])
    assert set(report["missing"]) == {
        f"backbone.net.blocks.{i}.attn.rel_pos_{a}" for i in range(DEPTH) for a in "hw"
    }  # ViTDet's zero-initialized rel-pos
    assert report["resized"] == ["backbone.net.pos_embed: [1, 197, 96] -> [1, 17, 96]"]
    assert json.loads((mae_run / "recipe.json").read_text())["input"]["pixel_mean"] == [
        123.675,
        116.28,
        103.53,
    ]


def test_cli_run_from_mae_learns_and_starts_from_the_file(
    mae_run: Path, mae_weights: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    """Loss falls; every backbone tensor moved away from the file's value, but by no more than AdamW can
    move it in ITERS steps (|step| <= lr (1 - b1) / sqrt(1 - b2) ~ 3.2 lr, Kingma & Ba §2.1), so training
    started from the file; the pos_embed cls slot (no gradient, no decay) is exactly the file's."""
    records = _train_records(mae_run)
    assert [r["iteration"] for r in records] == list(range(1, ITERS + 1))
    losses = [r["total_loss"] for r in records]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) < 0.8 * sum(losses[:2]), losses  # measured: 0.69 (4.32 -> 2.96)
    lr_sum = sum(r["lr"] for r in records)  # the scheduled base lr of each step
    final = load_checkpoint(mae_run / "model_final.pth")["model"]
    for key, src in mae_weights[1].items():
        if not key.startswith(("blocks.", "patch_embed.")):
            continue
        moved = (final[f"backbone.net.{key}"] - src).abs().max().item()
        decay_alone = lr_sum * WD * src.abs().max().item() if src.ndim > 1 else 0.0
        assert decay_alone < moved <= 3.2 * lr_sum + decay_alone + 1e-6, (key, moved)
    pos = final["backbone.net.pos_embed"]
    assert torch.equal(pos[:, :1], mae_weights[1]["pos_embed"][:, :1])  # untouched: no grad, no decay
    assert not torch.equal(pos[:, 1:], torch.zeros_like(pos[:, 1:]))


def test_cli_run_steps_every_parameter_with_its_layer_decay_lr(mae_run: Path) -> None:
    """The checkpoint before the last step holds the optimizer: each parameter's group lr is the base
    lr x the schedule x detectron2's decay rate for the recipe's depth; the last step moved every one."""
    [(it, path)] = list_checkpoints(mae_run / "checkpoints")
    assert it == ITERS - 1
    ckpt = load_checkpoint(path)
    final = load_checkpoint(mae_run / "model_final.pth")["model"]
    factor = lr_factor(it, ITERS, "cosine", 2, 0.001)
    seen: list[str] = []
    for group in ckpt["optimizer"]["param_groups"]:
        for name in group["param_names"]:
            expected = LR * factor * d2_vit_lr_decay_rate(name, RATE, DEPTH)
            assert group["lr"] == pytest.approx(expected, rel=1e-6), name
            assert not torch.equal(ckpt["model"][name], final[name]), f"{name} did not move in the last step"
            seen.append(name)
    assert len(seen) == len(set(seen))
    floating = {k for k, v in final.items() if v.is_floating_point() and "running_" not in k}
    assert set(seen) == floating  # every parameter is optimized (vitdet-tiny has no float buffers)


def test_bench_run_takes_weights_from_the_environment(
    data: Path,
    mae_weights: tuple[Path, dict[str, torch.Tensor]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VITBENCH_WEIGHTS_MAE", str(mae_weights[0]))
    study = tmp_path / "study"
    sets = [s for s in SETS if not s.startswith(("solver.max_iters", "solver.checkpoint_period"))]
    two_steps = [a for s in [*sets, "solver.max_iters=2", "solver.checkpoint_period=5"] for a in ("--set", s)]
    args = ["bench", "run", "--inits", "mae", "--recipe", "vitdet-tiny", "--data", str(data)]
    res = runner.invoke(app, [*args, "--out", str(study), "--no-register", "--no-progress", *two_steps])
    assert res.exit_code == 0, res.output
    report = json.loads((study / "mae" / "load_report.json").read_text())
    assert report["ok"] and report["source"] == str(mae_weights[0]) and len(report["loaded"]) > 4 * DEPTH
    final = load_checkpoint(study / "mae" / "model_final.pth")
    assert final["meta"]["init"] == "mae" and final["meta"]["weights"] == str(mae_weights[0])
    cls_slot = final["model"]["backbone.net.pos_embed"][:, :1]
    assert torch.equal(cls_slot, mae_weights[1]["pos_embed"][:, :1])  # the file's values, not random ones
