from __future__ import annotations

import math

import pytest
import torch
from d2_reference import d2_vit_lr_decay_rate

from vitbench.trainer.engine.optim import build_optimizer, layer_lr_scale, param_groups
from vitbench.trainer.engine.schedule import build_scheduler, lr_factor
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import SolverConfig, apply_overrides, get_recipe


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
    s1 = build_scheduler(ours, SolverConfig(max_iters=40, schedule="cosine", warmup_iters=0))
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


@pytest.mark.parametrize("recipe_name", ["vitdet-tiny", "bench-tiny"])
def test_every_parameter_lr_equals_detectron2_layer_decay_through_the_schedule(recipe_name: str) -> None:
    """Each trainable parameter's lr, at build time and after warmup/cosine steps, is
    base lr x schedule factor x detectron2's decay rate for its name (the recipe's depth, rate 0.7)."""
    recipe = get_recipe(recipe_name)
    depth, rate, lr = recipe.backbone.depth, 0.7, 1e-3
    net = build_detector(recipe, 3)
    opt = build_optimizer(net, lr, 0.1, layer_decay=rate, depth=depth)
    sched = build_scheduler(
        opt, SolverConfig(max_iters=20, schedule="cosine", warmup_iters=5, warmup_factor=0.01)
    )
    lr_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert len(lr_of) == len(named)  # every trainable parameter is optimized, once
    scales = {d2_vit_lr_decay_rate(n, rate, depth) for n, _ in named}
    assert len(scales) == depth + 2  # embeddings, each block, the rest
    for it in range(12):
        factor = lr_factor(it, 20, "cosine", 5, 0.01)
        for n, p in named:
            expected = lr * factor * d2_vit_lr_decay_rate(n, rate, depth)
            assert lr_of[id(p)]["lr"] == pytest.approx(expected, rel=1e-6), (it, n)
        opt.step()
        sched.step()


def test_frozen_parameters_stay_put_while_the_rest_trains() -> None:
    """No recipe freezes anything; a user who sets ``requires_grad=False`` (here the patch embedding)
    gets no optimizer slot for it and it keeps its exact value through AdamW steps with weight decay."""
    recipe = apply_overrides(
        get_recipe("vitdet-tiny"), ["input.image_size=64", "backbone.pretrain_img_size=64"]
    )
    torch.manual_seed(0)
    net = build_detector(recipe, 2).train()
    frozen = net.backbone.net.patch_embed.proj
    frozen.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = build_optimizer(net, 1e-3, 0.1, layer_decay=0.7, depth=recipe.backbone.depth)
    optimized = {n for g in opt.param_groups for n in g["param_names"]}
    assert optimized == {n for n, p in net.named_parameters() if p.requires_grad}
    assert "backbone.net.patch_embed.proj.weight" not in optimized

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 10:40, 12:50] = 1
    target = {"boxes": torch.tensor([[12.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]), "masks": mask}
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = sum(net([image], [target]).values())
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    after = dict(net.named_parameters())
    for name in ("weight", "bias"):
        assert torch.equal(getattr(frozen, name), before[f"backbone.net.patch_embed.proj.{name}"])
    assert all(not torch.equal(after[n], before[n]) for n in optimized)  # everything else moved
    assert losses[-1] < losses[0]
