"""Pre-training recipes: each encoder is its detector recipe's ViT; the papers' schedules; overrides."""

from __future__ import annotations

import math

import pytest

from vitbench.trainer.pretrain.recipes import (
    METHODS,
    check_matches_detector,
    get_pretrain_recipe,
    list_pretrain_recipes,
)
from vitbench.trainer.recipes import RecipeError, apply_overrides, get_recipe


@pytest.mark.parametrize("name", list_pretrain_recipes())
def test_every_encoder_matches_its_detector_recipe(name: str) -> None:
    method, _, size = name.partition("-")
    recipe = get_pretrain_recipe(method, size)
    assert recipe.name == name and recipe.method == method
    det = check_matches_detector(recipe)
    assert det.name == {"tiny": "bench-tiny", "b": "bench-b", "l": "bench-l"}[size]


def test_every_method_has_tiny_b_and_l() -> None:
    for m in METHODS:
        assert sorted(list_pretrain_recipes(m)) == sorted(f"{m}-{s}" for s in ("tiny", "b", "l"))


def test_papers_schedules() -> None:
    mae = get_pretrain_recipe("mae", "b").solver
    assert (mae.epochs, mae.warmup_epochs, mae.batch_size, mae.weight_decay, mae.betas) == (
        1600,
        40,
        4096,
        0.05,
        (0.9, 0.95),
    )
    assert math.isclose(mae.lr, 1.5e-4 * 4096 / 256)
    moco = get_pretrain_recipe("mocov3", "b")
    assert (moco.solver.epochs, moco.solver.weight_decay, moco.mocov3.temperature, moco.mocov3.momentum) == (
        300,
        0.1,
        0.2,
        0.99,
    )
    assert math.isclose(moco.solver.lr, 1.5e-4 * 4096 / 256)
    deit = get_pretrain_recipe("supervised", "b").solver
    assert (deit.epochs, deit.weight_decay) == (300, 0.05)
    assert math.isclose(deit.lr, 5e-4 * deit.batch_size / 512)
    assert get_pretrain_recipe("mae", "l").encoder.embed_dim == 1024
    assert get_pretrain_recipe("mae", "b").encoder.img_size == 224


def test_tiny_is_bench_tiny_at_64px() -> None:
    r = get_pretrain_recipe("mae", "tiny")
    bb = get_recipe("bench-tiny").backbone
    assert (r.encoder.embed_dim, r.encoder.depth, r.encoder.num_heads, r.encoder.img_size) == (
        bb.embed_dim,
        bb.depth,
        bb.num_heads,
        64,
    )
    assert math.isclose(r.solver.lr, 1.5e-3)


def test_iterations_from_epochs_or_max_iters() -> None:
    r = get_pretrain_recipe("mae", "tiny")  # batch 256, 70 epochs, 3.5 warmup epochs
    assert r.iterations(2970) == (11, 770, 38)
    short = apply_overrides(r, ["solver.max_iters=20"])
    assert short.iterations(2970) == (11, 20, 1)


def test_overrides_are_typed_and_checked() -> None:
    r = get_pretrain_recipe("mocov3", "tiny")
    r2 = apply_overrides(r, ["mocov3.temperature=0.1", "solver.batch_size=64"])
    assert (r2.mocov3.temperature, r2.solver.batch_size) == (0.1, 64)
    with pytest.raises(RecipeError, match=r"Did you mean .mocov3\.temperature."):
        apply_overrides(r, ["mocov3.temprature=0.1"])
    with pytest.raises(RecipeError, match=r"mae\.mask_ratio"):
        apply_overrides(r, ["mae.mask_ratio=1.5"])


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(RecipeError, match="mae-tiny"):
        get_pretrain_recipe("mae", "tinny")
    with pytest.raises(RecipeError, match="expected one of mae, supervised, mocov3"):
        get_pretrain_recipe("simclr", "tiny")
    with pytest.raises(RecipeError, match="is for method 'mae'"):
        get_pretrain_recipe("mocov3", "mae-tiny")


def test_a_mismatched_encoder_is_refused() -> None:
    r = apply_overrides(get_pretrain_recipe("mae", "tiny"), ["encoder.depth=8"])
    with pytest.raises(RecipeError, match="depth 8 vs 4"):
        check_matches_detector(r)


@pytest.mark.parametrize("name", ["mae-b", "supervised-b", "mocov3-b", "mae-l"])
def test_full_size_encoders_have_the_release_shapes_of_their_detector(name: str) -> None:
    """Built on the meta device: every encoder tensor the inits load has the detector's shape, and
    ViT-B's are the release shapes of reference §5.2 (pos_embed (1, 197, 768), qkv (2304, 768))."""
    import torch

    from vitbench.trainer.models.detector import build_detector
    from vitbench.trainer.pretrain.task import build_pretrain_model

    method, _, size = name.partition("-")
    pre = get_pretrain_recipe(method, size)
    with torch.device("meta"):
        model = build_pretrain_model(pre, num_classes=1000)
        det = build_detector(check_matches_detector(pre), 80)
    state = model.state_dict()
    prefix = "base_encoder." if method == "mocov3" else ""
    target = det.state_dict()
    keys = [k for k in state if k.removeprefix(prefix).startswith(("patch_embed.", "pos_embed", "blocks."))]
    keys = [k for k in keys if k.startswith(prefix)]
    assert len(keys) == 3 + 12 * pre.encoder.depth
    for k in keys:
        assert state[k].shape == target[f"backbone.net.{k.removeprefix(prefix)}"].shape, k
    if size == "b":
        assert state[f"{prefix}pos_embed"].shape == (1, 197, 768)
        assert state[f"{prefix}blocks.11.attn.qkv.weight"].shape == (2304, 768)
