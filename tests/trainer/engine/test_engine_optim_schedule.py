from __future__ import annotations

import math

import pytest
import torch

from vitbench.trainer.engine.optim import build_optimizer, layer_lr_scale, param_groups
from vitbench.trainer.engine.schedule import build_scheduler, lr_factor
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import get_recipe


def test_cosine_with_linear_warmup_matches_closed_form() -> None:
    for it in (0, 5, 10, 50, 99, 100):
        cos = 0.5 * (1 + math.cos(math.pi * it / 100))
        warm = 0.001 * (1 - it / 10) + it / 10 if it < 10 else 1.0
        assert lr_factor(it, 100, "cosine", 10, 0.001) == pytest.approx(cos * warm)
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_cosine_without_warmup_matches_torch_cosine_annealing() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    ours = torch.optim.SGD([p], lr=1.0)
    ref = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s1 = build_scheduler(ours, 40, "cosine", 0)
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=40)
    for _ in range(40):
        assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"], abs=1e-9)
        ours.step(), ref.step(), s1.step(), s2.step()


def test_step_schedule_matches_multistep() -> None:
    assert [lr_factor(i, 100, "step", steps=(60, 90)) for i in (0, 59, 60, 89, 90)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01]
    )


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_detector(get_recipe("vitdet-tiny"), 3)


def test_weight_decay_rules(model: torch.nn.Module) -> None:
    groups = param_groups(model, 1e-4, 0.1)
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    assert "backbone.net.pos_embed" in no_decay
    assert "backbone.net.blocks.0.norm1.weight" in no_decay and "backbone.net.blocks.0.norm1.bias" in no_decay
    assert "backbone.net.blocks.0.attn.qkv.bias" in no_decay
    assert (
        "backbone.net.blocks.1.attn.rel_pos_h" in no_decay
        and "backbone.net.blocks.1.attn.rel_pos_w" in no_decay
    )
    assert (
        "backbone.net.blocks.0.attn.qkv.weight" in decay and "backbone.net.patch_embed.proj.weight" in decay
    )
    assert "roi_heads.box_predictor.cls_score.weight" in decay
    assert all(not n.endswith(".bias") for n in decay)
    assert decay | no_decay == {n for n, p in model.named_parameters() if p.requires_grad}


def test_layer_decay_follows_vitdet_rule(model: torch.nn.Module) -> None:
    depth, rate = 4, 0.7
    assert layer_lr_scale("backbone.net.blocks.3.mlp.fc1.weight", rate, depth) == pytest.approx(0.7)
    assert layer_lr_scale("backbone.net.blocks.0.mlp.fc1.weight", rate, depth) == pytest.approx(0.7**4)
    assert layer_lr_scale("backbone.net.pos_embed", rate, depth) == pytest.approx(0.7**5)
    assert layer_lr_scale("backbone.net.patch_embed.proj.weight", rate, depth) == pytest.approx(0.7**5)
    assert layer_lr_scale("backbone.neck.p2.0.weight", rate, depth) == 1.0
    assert layer_lr_scale("backbone.net.blocks.2.attn.qkv.weight", None, depth) == 1.0
    opt = build_optimizer(model, 1e-3, 0.1, layer_decay=rate, depth=depth)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
        for n in g["param_names"]:
            assert g["lr_scale"] == pytest.approx(layer_lr_scale(n, rate, depth))
