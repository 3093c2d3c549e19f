"""Per-init recipe overrides carry the study's tuned values and the ViTDet recipe."""

from __future__ import annotations

import pytest

from vitbench.trainer.inits import InitError, apply_init_overrides
from vitbench.trainer.recipes import get_recipe


@pytest.mark.parametrize(
    ("init", "lr", "wd"),
    [
        ("random", 1.6e-4, 0.2),
        ("mocov3", 1.6e-4, 0.1),
        ("supervised", 8e-5, 0.1),
        ("beit", 8e-5, 0.1),
        ("mae", 8e-5, 0.1),
    ],
)
@pytest.mark.parametrize(("recipe", "drop_path"), [("bench-b", 0.1), ("bench-l", 0.3)])
def test_study_values(init: str, lr: float, wd: float, recipe: str, drop_path: float) -> None:
    r = apply_init_overrides(get_recipe(recipe), init)
    assert (r.solver.lr, r.solver.weight_decay, r.backbone.drop_path) == (lr, wd, drop_path)
    assert r.solver.layer_decay is None
    assert (r.backbone.qv_bias, r.backbone.layer_scale is not None) == (
        (True, True) if init == "beit" else (False, False)
    )


@pytest.mark.parametrize(
    ("recipe", "drop_path", "decay"), [("vitdet-b", 0.1, 0.7), ("vitdet-l", 0.4, 0.8), ("vitdet-h", 0.5, 0.9)]
)
def test_vitdet_values(recipe: str, drop_path: float, decay: float) -> None:
    for init in ("mae", "random", "mocov3"):
        r = apply_init_overrides(get_recipe(recipe), init)
        assert (r.solver.lr, r.solver.weight_decay) == (1e-4, 0.1)
        assert (r.backbone.drop_path, r.solver.layer_decay) == (drop_path, decay)


def test_beit_layer_scale_by_size_and_pixels() -> None:
    assert apply_init_overrides(get_recipe("bench-l"), "beit").backbone.layer_scale == 1e-5
    r = apply_init_overrides(get_recipe("bench-b"), "beit")
    assert r.input.pixel_mean == r.input.pixel_std == (127.5, 127.5, 127.5)


def test_tiny_mimdet_and_swin_keep_their_schedule() -> None:
    for name, init in (("bench-tiny", "mae"), ("mimdet-b", "mae_full"), ("swin-t", "moby")):
        base = get_recipe(name)
        r = apply_init_overrides(base, init)
        assert r.solver == base.solver and r.backbone.drop_path == base.backbone.drop_path


def test_unknown_init() -> None:
    with pytest.raises(InitError, match="unknown init 'beit2'"):
        apply_init_overrides(get_recipe("bench-b"), "beit2")
