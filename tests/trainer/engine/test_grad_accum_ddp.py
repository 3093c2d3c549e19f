"""Gradient accumulation and DDP give the update of the whole batch, checked by value.

Mask R-CNN's loss is not a plain mean over images (RPN and RoI losses normalize by the number of
sampled anchors/RoIs over the batch, and the samplers draw at random), so "the same update" is defined
as detectron2 and torch DDP define it: one optimizer step on the mean of the per-micro-batch losses.
The runs here sample *every* anchor and RoI (batch sizes far above the candidates, positive fraction 1),
which makes a step independent of the random state, so runs that split the batch differently (micro-
batches, ranks) and an independent re-computation must agree to float precision.

- fast: ``vitbench train`` with ``grad_accum=2`` stops after step 1 (checkpoint) and step 2; step 2 is
  recomputed here from the step-1 checkpoint (model + AdamW state) with plain torch: forward each image
  of the step, backward the mean of the two losses, ``AdamW.step()``. Weights within 1e-5 (fp32).
- slow: two-process DDP (gloo, torchrun) equals the single-process accumulated run, and both ranks hold
  identical weights after training.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_tiny import TINY_SYNTH
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.data.coco import TrainingSampler, to_model_inputs
from vitbench.trainer.data.synth import generate_dataset
from vitbench.trainer.engine.checkpoint import load_checkpoint
from vitbench.trainer.engine.detection import training_set
from vitbench.trainer.engine.optim import build_optimizer
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import load_recipe

REPO = Path(__file__).resolve().parents[3]
BATCH = 2
SETS = [
    "input.image_size=64",
    "backbone.pretrain_img_size=64",
    f"solver.batch_size={BATCH}",
    "solver.max_iters=2",
    "solver.warmup_iters=1",
    "solver.checkpoint_period=1",
    "solver.eval_period=0",
    "solver.lr=1e-3",
    "solver.layer_decay=0.8",
    # sample every anchor / RoI: the step no longer depends on the random state
    "heads.rpn_batch_size_per_image=100000",
    "heads.rpn_positive_fraction=1.0",
    "heads.roi_batch_size_per_image=100000",
    "heads.roi_positive_fraction=1.0",
    "heads.rpn_post_nms_top_n_train=40",
    "heads.detections_per_img=10",
    "data.num_workers=0",
]
runner = CliRunner()


def _sets(*extra: str) -> list[str]:
    return [a for s in [*SETS, *extra] for a in ("--set", s)]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--recipe",
        "vitdet-tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-register",
        "--no-progress",
        "--device",
        "cpu",
        "--log-period",
        "1",
        *_sets(*extra),
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("accumdata")
    generate_dataset(root, 6, seed=8, cfg=TINY_SYNTH, val_fraction=0.2)
    return root


@pytest.fixture(scope="module")
def accum_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, 2 micro-batches of 1 image per step."""
    out = tmp_path_factory.mktemp("accum") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = runner.invoke(app, _train_args(data, out, "solver.grad_accum=2"))
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    return out


def _train_losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["total_loss"] for r in lines if r["type"] == "train"]


def _params(state: dict[str, torch.Tensor], names: set[str]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k in names}


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_accumulated_step_equals_the_mean_of_micro_batch_losses(accum_run: Path, data: Path) -> None:
    recipe = load_recipe(accum_run / "recipe.json")
    assert recipe.solver.grad_accum == 2
    ckpt = load_checkpoint(accum_run / "checkpoints" / "model_0000001.pth")
    assert ckpt["iteration"] == 1
    r = recipe
    ds = training_set(data, recipe)  # what the run trained on, augmentation included
    model = build_detector(recipe, len(ds.class_names))
    model.load_state_dict(ckpt["model"])
    model.train()
    opt = build_optimizer(
        model, r.solver.lr, r.solver.weight_decay, r.solver.betas, r.solver.layer_decay, r.backbone.depth
    )
    opt.load_state_dict(ckpt["optimizer"])  # AdamW moments after step 1 and the lrs of step 2

    # Step 2 sees the global sample stream's positions 2 and 3 (with their augmentation seeds).
    stream = iter(TrainingSampler(len(ds), recipe.seed, start=1 * BATCH))
    losses = []
    for _ in range(BATCH):
        image, target = ds[next(stream)]
        inputs, targets = to_model_inputs([image], [target], torch.device("cpu"))
        losses.append(sum(model(inputs, targets).values()))
    opt.zero_grad()
    mean_loss = torch.stack(losses).mean()
    mean_loss.backward()
    opt.step()

    assert _train_losses(accum_run)[1] == pytest.approx(mean_loss.item(), rel=1e-5, abs=1e-5)
    names = {n for n, _ in model.named_parameters()}
    final = _params(load_checkpoint(accum_run / "model_final.pth")["model"], names)
    before = _params(ckpt["model"], names)
    assert final.keys() == names
    moved = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(final[name], p.detach(), rtol=0, atol=1e-5, msg=name)
        moved += not torch.equal(before[name], final[name])
    assert moved == len(names)  # the step changed every parameter, so the comparison means something


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_accumulation(accum_run: Path, data: Path, tmp_path: Path) -> None:
    """torchrun, 2 ranks x 1 image (gloo) == 1 process x 2 micro-batches of 1 image: same losses, same
    weights (fp32, 1e-5); every rank ends with the same weights (captured from each rank's model)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(_free_port()), str(Path(__file__).with_name("ddp_rank_weights.py"))]
    cmd += _train_args(data, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert load_recipe(out / "recipe.json").solver.grad_accum == 1

    assert _train_losses(out) == pytest.approx(_train_losses(accum_run), rel=1e-5, abs=1e-5)
    ddp = load_checkpoint(out / "model_final.pth")["model"]
    ref = load_checkpoint(accum_run / "model_final.pth")["model"]
    rank0: dict[str, Any] = torch.load(out / "rank0_weights.pt", weights_only=True)
    rank1: dict[str, Any] = torch.load(out / "rank1_weights.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and set(rank0) <= set(ddp)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks disagree on {name}"
        torch.testing.assert_close(ddp[name], rank0[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(ddp[name], ref[name], rtol=0, atol=1e-5, msg=name)
