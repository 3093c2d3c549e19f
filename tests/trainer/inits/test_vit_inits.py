"""Every ViT initialization loads from a file in its published format with the expected LoadReport,
and the loaded backbone matches timm's reference implementations numerically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from inits_formats import beit_file, deit_file, equivalence_recipe, mae_file, mocov3_file
from timm.layers import resize_rel_pos_bias_table_simple
from timm.models.beit import Beit
from timm.models.beit import checkpoint_filter_fn as beit_filter
from timm_refs import timm_backbone_vit

from vitbench.trainer.inits import InitError, LoadReport, apply_init_overrides, load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import Recipe, apply_overrides, get_recipe

C, DEPTH, HEADS = 96, 4, 3  # bench-tiny widths
RELPOS = {
    "backbone.net.rel_pos_window.relative_position_bias_table",
    "backbone.net.rel_pos_global.relative_position_bias_table",
}


def _save(obj: dict[str, Any], path: Path) -> str:
    torch.save(obj, path)
    return str(path)


def _vit_keys(model: torch.nn.Module) -> set[str]:
    return {k for k in model.state_dict() if k.startswith("backbone.net.")}


@pytest.mark.parametrize(
    ("init", "factory", "weights_of", "dropped"),
    [
        ("supervised", deit_file, lambda f: f["model"], {"cls_token", "norm.weight", "head.weight"}),
        ("mae", mae_file, lambda f: f["model"], {"cls_token"}),
        (
            "mocov3",
            mocov3_file,
            lambda f: {k.removeprefix("module.base_encoder."): v for k, v in f["state_dict"].items()},
            {
                "module.base_encoder.cls_token",
                "module.momentum_encoder.blocks.0.attn.qkv.weight",
                "module.base_encoder.head.0.weight",
                "module.predictor.7.running_mean",
            },
        ),
    ],
)
def test_timm_format_inits_load_with_expected_report(
    tmp_path: Path, bench_tiny: Recipe, init: str, factory: Any, weights_of: Any, dropped: set[str]
) -> None:
    file = factory(C, DEPTH)
    path = _save(file, tmp_path / "ckpt.pth")
    recipe = apply_init_overrides(bench_tiny, init)
    model = build_detector(recipe, num_classes=3)
    report = load_initialization(model, recipe, init, path)

    assert isinstance(report, LoadReport) and report.ok
    assert set(report.missing) == RELPOS  # zero-initialized rel-pos tables, nothing else
    # MAE keeps its final encoder norm in the file (MIMDet uses it); a plain ViT detector has no place
    # for it, which the catalog expects.
    assert report.unexpected == (("norm.weight", "norm.bias") if init == "mae" else ())
    assert set(report.loaded) == _vit_keys(model) - RELPOS
    assert dropped <= set(report.dropped)
    assert report.resized == ("backbone.net.pos_embed: [1, 197, 96] -> [1, 17, 96]",)
    src = weights_of(file)
    state = model.state_dict()
    torch.testing.assert_close(state["backbone.net.blocks.3.mlp.fc2.weight"], src["blocks.3.mlp.fc2.weight"])
    torch.testing.assert_close(state["backbone.net.blocks.0.attn.qkv.bias"], src["blocks.0.attn.qkv.bias"])
    torch.testing.assert_close(
        state["backbone.net.pos_embed"][:, :1], src["pos_embed"][:, :1]
    )  # cls slot kept


def test_beit_loads_qv_bias_layer_scale_and_shared_tables(tmp_path: Path, bench_tiny: Recipe) -> None:
    file = beit_file(C, DEPTH, HEADS)
    path = _save(file, tmp_path / "beit.pth")
    recipe = apply_init_overrides(bench_tiny, "beit")
    assert recipe.backbone.qv_bias and recipe.backbone.layer_scale == 0.1
    assert recipe.input.pixel_mean == (127.5, 127.5, 127.5)
    model = build_detector(recipe, num_classes=3)
    before_pos = model.state_dict()["backbone.net.pos_embed"].clone()
    report = load_initialization(model, recipe, "beit", path)

    assert report.ok
    assert report.missing == ("backbone.net.pos_embed",)  # BEiT has no absolute embedding
    assert set(report.loaded) == _vit_keys(model) - {"backbone.net.pos_embed"}
    assert {"mask_token", "lm_head.weight", "rel_pos_bias.relative_position_index", "norm.bias"} <= set(
        report.dropped
    )
    # (2*14-1)^2 + 3 = 732 rows -> window 4: 7^2 rows, global 8x8 grid: 15^2 rows
    assert sorted(report.resized) == [
        "backbone.net.rel_pos_global.relative_position_bias_table: [732, 3] -> [225, 3]",
        "backbone.net.rel_pos_window.relative_position_bias_table: [732, 3] -> [49, 3]",
    ]
    state = model.state_dict()
    m = file["model"]
    torch.testing.assert_close(state["backbone.net.blocks.2.attn.q_bias"], m["blocks.2.attn.q_bias"])
    torch.testing.assert_close(state["backbone.net.blocks.2.gamma_2"], m["blocks.2.gamma_2"])
    torch.testing.assert_close(state["backbone.net.pos_embed"], before_pos)
    # the shared table's values: timm's bicubic table resize (cls rows dropped) for each set
    table = m["rel_pos_bias.relative_position_bias_table"]
    for name, window in (("rel_pos_window", 4), ("rel_pos_global", 8)):
        rows = (2 * window - 1) ** 2
        ref = resize_rel_pos_bias_table_simple(table, (window, window), (rows + 3, HEADS))[:rows]
        torch.testing.assert_close(
            state[f"backbone.net.{name}.relative_position_bias_table"], ref, atol=1e-5, rtol=1e-5
        )


def test_beit_without_its_overrides_is_refused_with_a_hint(tmp_path: Path, bench_tiny: Recipe) -> None:
    path = _save(beit_file(C, DEPTH, HEADS), tmp_path / "beit.pth")
    model = build_detector(bench_tiny, num_classes=3)
    with pytest.raises(
        InitError,
        match=r"no place in the model, e\.g\. backbone\.net\.blocks\.0\.gamma_1.*apply_init_overrides",
    ):
        load_initialization(model, bench_tiny, "beit", path)


def test_beit_into_fused_qkv_bias_uses_zero_key_bias(tmp_path: Path) -> None:
    """Without q/v-bias blocks the biases fuse into qkv.bias = [q, 0, v]; ViTDet's decomposed rel-pos
    cannot take BEiT's scalar table, which the report lists as expected-unexpected."""
    file = beit_file(C, DEPTH, HEADS)
    path = _save(file, tmp_path / "beit.pth")
    recipe = apply_overrides(get_recipe("vitdet-tiny"), ["backbone.layer_scale=0.1"])
    model = build_detector(recipe, num_classes=3)
    report = load_initialization(model, recipe, "beit", path)
    assert report.ok
    assert report.unexpected == ("rel_pos_bias.relative_position_bias_table",)
    fused = model.state_dict()["backbone.net.blocks.1.attn.qkv.bias"]
    m = file["model"]
    torch.testing.assert_close(
        fused, torch.cat([m["blocks.1.attn.q_bias"], torch.zeros(C), m["blocks.1.attn.v_bias"]])
    )


def _base_encoder(file: dict[str, Any]) -> dict[str, Any]:
    """MoCo v3's base encoder (the one the study transfers), without the DDP/branch prefix."""
    prefix = "module.base_encoder."
    return {k.removeprefix(prefix): v for k, v in file["state_dict"].items() if k.startswith(prefix)}


@pytest.mark.parametrize(
    ("init", "factory", "weights_of"),
    [
        ("mae", mae_file, lambda f: f["model"]),
        ("supervised", deit_file, lambda f: f["model"]),
        ("mocov3", mocov3_file, _base_encoder),
    ],
)
def test_mae_deit_mocov3_equal_timm_vision_transformer(
    tmp_path: Path, init: str, factory: Any, weights_of: Any
) -> None:
    """MAE/DeiT/MoCo v3-format weights in our backbone (global attention, no rel-pos) == timm
    VisionTransformer holding the same encoder (MoCo v3: the base encoder, not the momentum one)."""
    file = factory(C, DEPTH, seed=7)
    path = _save(file, tmp_path / "vit.pth")
    recipe = equivalence_recipe("bench-tiny", "backbone.window_size=0", "backbone.rel_pos=none")
    model = build_detector(recipe, num_classes=3).eval()
    report = load_initialization(model, recipe, init, path)
    assert report.ok and report.missing == () and report.resized == ()

    ref = timm_backbone_vit(224, C, DEPTH, HEADS)
    sd = {k: v for k, v in weights_of(file).items() if k != "cls_token" and not k.startswith("head.")}
    sd["pos_embed"] = sd["pos_embed"][:, 1:]  # the cls slot has no token in a cls-free ViT
    ref.load_state_dict(sd, strict=True)

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.backbone.net(x)
        theirs = ref.forward_intermediates(
            x, indices=[0, 1, 2, 3], output_fmt="NCHW", intermediates_only=True
        )
    assert isinstance(theirs, list) and len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert isinstance(b, torch.Tensor)
        assert a.shape == b.shape == (2, C, 14, 14)
        assert (a - b).abs().max().item() <= 1e-4


def _timm_beit(img_size: int) -> Beit:
    """timm's Beit at the test widths with one relative-position table shared by every block (as the
    file) and no absolute embedding; ``global_pool="token"`` keeps the final ``norm`` (unused here) rather
    than ``fc_norm``, as in the file."""
    return Beit(
        img_size=img_size,
        patch_size=16,
        embed_dim=C,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=0,
        global_pool="token",
        use_abs_pos_emb=False,
        use_rel_pos_bias=False,
        use_shared_rel_pos_bias=True,
        init_values=0.1,
    ).eval()


def _beit_block_maps(ref: Beit, x: torch.Tensor, grid: int) -> list[torch.Tensor]:
    """Each of ``ref``'s block outputs on ``x`` (1, 3, H, W) as a (1, C, grid, grid) map, the blocks run on
    the patch tokens only with the patch-to-patch part of the shared bias."""
    tokens = ref.patch_embed(x)  # (1, grid*grid, C)
    bias = ref.rel_pos_bias()[:, 1:, 1:]  # (nH, 1 + g*g, 1 + g*g) -> patch-to-patch part
    maps = []
    for blk in ref.blocks:
        tokens = blk(tokens, shared_rel_pos_bias=bias)
        maps.append(tokens.transpose(1, 2).reshape(1, C, grid, grid))
    return maps


def test_beit_equals_timm_beit_with_one_window_covering_the_image(tmp_path: Path) -> None:
    """BEiT-format weights: our windowed/global blocks with one 14x14 window == timm Beit with a shared
    relative-position bias (patch tokens only; the cls rows of the bias are not used by a detector)."""
    file = beit_file(C, DEPTH, HEADS, seed=3)
    path = _save(file, tmp_path / "beit.pth")
    recipe = apply_init_overrides(equivalence_recipe("bench-tiny", "backbone.window_size=14"), "beit")
    model = build_detector(recipe, num_classes=3).eval()
    report = load_initialization(model, recipe, "beit", path)
    assert report.ok and report.resized == ()  # window 14 and the 14x14 grid both use 27x27 tables
    with torch.no_grad():
        model.backbone.net.pos_embed.zero_()  # BEiT has no absolute embedding

    ref = _timm_beit(224)
    missing, unexpected = ref.load_state_dict(beit_filter(dict(file["model"]), ref), strict=False)
    # the pre-training-only parts (mask token, masked-image-modelling head) have no place in timm's Beit
    assert set(unexpected) == {"mask_token", "lm_head.weight", "lm_head.bias"}, unexpected
    assert missing == [], missing

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.backbone.net(x)
        theirs = _beit_block_maps(ref, x, 14)
    for a, b in zip(ours, theirs, strict=True):
        assert (a - b).abs().max().item() <= 1e-4


def test_beit_at_another_grid_equals_timm_beit_with_the_resized_table(tmp_path: Path) -> None:
    """BEiT weights in global blocks on an 8x8 grid (the 27x27 table resized to 15x15 at load) == timm's
    Beit at 128 px holding the same weights and the table resized by timm's bicubic resize."""
    file = beit_file(C, DEPTH, HEADS, seed=5)
    path = _save(file, tmp_path / "beit.pth")
    recipe = apply_init_overrides(
        apply_overrides(get_recipe("bench-tiny"), ["backbone.window_size=0"]), "beit"
    )
    model = build_detector(recipe, num_classes=3).eval()
    report = load_initialization(model, recipe, "beit", path)
    assert report.ok and report.resized == (
        "backbone.net.rel_pos_global.relative_position_bias_table: [732, 3] -> [225, 3]",
    )
    with torch.no_grad():
        model.backbone.net.pos_embed.zero_()  # BEiT has no absolute embedding

    ref = _timm_beit(128)
    skip = {"mask_token", "lm_head.weight", "lm_head.bias", "rel_pos_bias.relative_position_index"}
    sd = {k: v for k, v in file["model"].items() if k not in skip}
    key = "rel_pos_bias.relative_position_bias_table"
    sd[key] = resize_rel_pos_bias_table_simple(sd[key], (8, 8), (15 * 15 + 3, HEADS))
    ref.load_state_dict(sd, strict=True)

    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.backbone.net(x)
        theirs = _beit_block_maps(ref, x, 8)
    assert len(ours) == len(theirs) == DEPTH
    for a, b in zip(ours, theirs, strict=True):
        assert (a - b).abs().max().item() <= 1e-4
