"""Recipes: the catalogue's values, immutability, overrides with clear errors, resolved-recipe files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from vitbench.trainer.recipes import (
    Recipe,
    RecipeError,
    apply_overrides,
    get_recipe,
    list_recipes,
    load_recipe,
    recipe_keys,
    save_resolved_recipe,
)


def test_catalogue_names() -> None:
    assert list_recipes() == [
        "bench-b",
        "bench-l",
        "vitdet-b",
        "vitdet-l",
        "vitdet-h",
        "mimdet-b",
        "swin-t",
        "bench-tiny",
        "vitdet-tiny",
    ]
    for name in list_recipes():
        assert get_recipe(name).name == name


def test_study_recipes() -> None:
    b, large = get_recipe("bench-b"), get_recipe("bench-l")
    assert (b.backbone.embed_dim, b.backbone.depth, b.backbone.num_heads) == (768, 12, 12)
    assert (large.backbone.embed_dim, large.backbone.depth, large.backbone.num_heads) == (1024, 24, 16)
    assert b.backbone.global_blocks == (2, 5, 8, 11) and large.backbone.global_blocks == (5, 11, 17, 23)
    assert b.backbone.window_size == 14 and b.backbone.rel_pos == "shared_bias"
    assert (b.neck.kind, b.neck.norm, b.heads.norm) == ("multiscale_fpn", "syncbn", "syncbn")
    assert (b.solver.schedule, b.solver.max_iters, b.solver.batch_size) == ("cosine", 184_375, 64)
    assert b.solver.betas == (0.9, 0.999) and b.solver.layer_decay is None
    assert (b.backbone.drop_path, large.backbone.drop_path) == (0.1, 0.3)
    assert b.data.train_scale_range == (0.1, 2.0) and b.input.image_size == 1024


def test_vitdet_recipes() -> None:
    b, large, h = get_recipe("vitdet-b"), get_recipe("vitdet-l"), get_recipe("vitdet-h")
    assert b.backbone.rel_pos == "decomposed" and (b.neck.kind, b.neck.norm, b.heads.norm) == (
        "simple_fpn",
        "ln",
        "ln",
    )
    assert (b.solver.lr, b.solver.schedule, b.solver.steps) == (1e-4, "step", (163_889, 177_546))
    assert (b.solver.warmup_iters, b.solver.warmup_factor) == (250, 0.001)
    assert [r.solver.layer_decay for r in (b, large, h)] == [0.7, 0.8, 0.9]
    assert [r.backbone.drop_path for r in (b, large, h)] == [0.1, 0.4, 0.5]
    assert h.backbone.global_blocks == (7, 15, 23, 31) and h.backbone.embed_dim == 1280
    assert h.solver.max_iters == 138_281  # 75 epochs


def test_tiny_presets_are_cpu_sized() -> None:
    for name in ("bench-tiny", "vitdet-tiny"):
        r = get_recipe(name)
        assert r.input.image_size == 128 and r.neck.out_channels == 64
        assert r.backbone.depth == 4 and r.backbone.window_size == 4 and r.backbone.global_blocks == (1, 3)
        assert r.solver.amp == "none" and r.data.num_workers == 0
    assert get_recipe("vitdet-tiny").backbone.rel_pos == "decomposed"
    assert get_recipe("bench-tiny").neck.kind == "multiscale_fpn"


def test_recipes_are_frozen_and_reject_unknown_fields() -> None:
    r = get_recipe("bench-b")
    with pytest.raises(ValidationError):
        r.solver.lr = 1.0  # type: ignore[misc]
    data = r.model_dump()
    data["solver"]["learning_rate"] = 1.0
    with pytest.raises(ValidationError, match="learning_rate"):
        Recipe.model_validate(data)


def test_apply_overrides_parses_values_and_keeps_the_original() -> None:
    base = get_recipe("bench-tiny")
    r = apply_overrides(
        base,
        [
            "solver.lr=1e-4",
            "backbone.global_blocks=0,2",
            "heads.anchor_sizes=[8, 16, 32, 64, 128]",
            "backbone.qv_bias=true",
            "solver.clip_grad=1.5",
            "seed=7",
            "backbone.rel_pos=none",
        ],
    )
    assert r.solver.lr == 1e-4 and r.backbone.global_blocks == (0, 2)
    assert r.heads.anchor_sizes == (8, 16, 32, 64, 128) and r.backbone.qv_bias is True
    assert r.solver.clip_grad == 1.5 and r.seed == 7 and r.backbone.rel_pos == "none"
    assert apply_overrides(r, ["solver.clip_grad=none"]).solver.clip_grad is None
    assert base.solver.lr == 5e-4 and base.backbone.global_blocks == (1, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.lrr=1", "unknown recipe key 'solver.lrr'. Did you mean 'solver.lr'"),
        ("backbone.windowsize=7", "Did you mean 'backbone.window_size'"),
        ("solver.lr=fast", "invalid value 'fast' for 'solver.lr': expected float"),
        ("solver.amp=fp8", "expected one of 'none', 'bf16', 'fp16'"),
        ("input.pixel_mean=1,2", "for 'input.pixel_mean': expected a list of 3 float values"),
        ("backbone.global_blocks=1,9", "global_blocks [9] out of range"),
        ("solver.lr=-1", "for 'solver.lr': expected float"),
        ("solver.lr", "not of the form key=value"),
    ],
)
def test_override_errors_name_the_key_and_what_was_expected(override: str, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        apply_overrides(get_recipe("bench-tiny"), [override])
    assert message in str(info.value)


def test_cross_field_validation() -> None:
    with pytest.raises(RecipeError, match=r"multiple of backbone\.patch_size"):
        apply_overrides(get_recipe("bench-tiny"), ["input.image_size=100"])
    with pytest.raises(RecipeError, match="steps"):
        apply_overrides(get_recipe("vitdet-tiny"), ["solver.steps=[500]"])
    with pytest.raises(RecipeError, match=r"expected neck\.kind 'fpn'"):
        apply_overrides(get_recipe("bench-tiny"), ["backbone.kind=swin"])


def test_unknown_recipe_name_suggests_close_ones() -> None:
    with pytest.raises(RecipeError, match="Did you mean 'vitdet-b'"):
        get_recipe("vitdet_b")


def test_recipe_keys_cover_every_section() -> None:
    keys = recipe_keys()
    assert {"name", "seed", "solver.lr", "backbone.window_size", "neck.norm", "input.image_size"} <= set(keys)
    assert "data.train_scale_range" in keys and "heads.detections_per_img" in keys


def test_save_resolved_recipe_round_trips(tmp_path: Path) -> None:
    r = apply_overrides(get_recipe("vitdet-tiny"), ["solver.max_iters=50"])
    path = save_resolved_recipe(r, tmp_path / "run")
    assert path == tmp_path / "run" / "recipe.json"
    assert [p.name for p in path.parent.iterdir()] == ["recipe.json"]  # no temporary left behind
    data = json.loads(path.read_text())
    assert data["solver"]["max_iters"] == 50 and data["backbone"]["global_blocks"] == [1, 3]
    assert load_recipe(path) == r and load_recipe(path.parent) == r and load_recipe(data) == r


def test_load_recipe_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.json")
    bad = tmp_path / "recipe.json"
    bad.write_text("{not json")
    with pytest.raises(RecipeError, match="not valid JSON"):
        load_recipe(bad)


def test_recipes_module_does_not_import_torch() -> None:
    code = "import sys, vitbench.trainer.recipes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
