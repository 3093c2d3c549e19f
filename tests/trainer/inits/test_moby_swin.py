"""MoBY (Swin-T under ``encoder.``) loads into the Swin backbone and matches timm's Swin numerically."""

from __future__ import annotations

from pathlib import Path

import torch
from inits_formats import moby_file, save_with_fake_yacs, swin_encoder
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as swin_filter

from vitbench.trainer.inits import apply_init_overrides, load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.recipes import Recipe, apply_overrides, get_recipe

C, DEPTHS, HEADS = 32, (2, 2, 2, 2), (1, 2, 4, 8)  # Swin-T: 96, (2, 2, 6, 2), (3, 6, 12, 24)


def _swin_recipe() -> Recipe:
    return apply_overrides(
        get_recipe("swin-t"),
        [
            f"backbone.embed_dim={C}",
            "backbone.stage_depths=2,2,2,2",
            "backbone.stage_heads=1,2,4,8",
            "input.image_size=224",
            "neck.out_channels=32",
            "heads.box_conv_dim=32",
            "heads.box_fc=64",
            "heads.mask_conv_dim=32",
        ],
    )


def test_moby_file_loads_with_expected_report(tmp_path: Path) -> None:
    file = moby_file(C, DEPTHS, HEADS)
    path = tmp_path / "moby_swin_t_300ep_pretrained.pth"
    save_with_fake_yacs(file, path)  # the published file carries a yacs config
    recipe = apply_init_overrides(_swin_recipe(), "moby")
    model = build_detector(recipe, num_classes=3)
    report = load_initialization(model, recipe, "moby", str(path))

    assert report.ok, report.failure_message()
    body = {k for k in model.state_dict() if k.startswith("backbone.body.")}
    index = {k for k in body if k.endswith("relative_position_index")}
    assert set(report.missing) == index  # rebuilt constants, not weights
    assert set(report.loaded) == body - index
    assert report.unexpected == ()
    dropped = set(report.dropped)
    assert {
        "encoder_k.patch_embed.proj.weight",
        "queue1",
        "queue_ptr",
        "predictor.linear_out.weight",
    } <= dropped
    assert {
        "projector.linear_hidden.0.weight",
        "encoder.norm.weight",
        "encoder.layers.0.blocks.1.attn_mask",
    } <= dropped
    state, src = model.state_dict(), file["model"]
    torch.testing.assert_close(
        state["backbone.body.5.1.mlp.3.weight"], src["encoder.layers.2.blocks.1.mlp.fc2.weight"]
    )
    torch.testing.assert_close(
        state["backbone.body.4.reduction.weight"], src["encoder.layers.1.downsample.reduction.weight"]
    )


def test_moby_swin_equals_timm_swin(tmp_path: Path) -> None:
    """Our torchvision-based stages loaded from the MoBY file == timm SwinTransformer loaded through
    timm's own official-Swin checkpoint filter, at every stage (strides 4-32)."""
    file = moby_file(C, DEPTHS, HEADS, seed=11)
    path = tmp_path / "moby.pth"
    save_with_fake_yacs(file, path)
    recipe = _swin_recipe()
    model = build_detector(recipe, num_classes=3).eval()
    assert load_initialization(model, recipe, "moby", str(path)).ok

    ref = SwinTransformer(
        img_size=224, patch_size=4, embed_dim=C, depths=DEPTHS, num_heads=HEADS, window_size=7, num_classes=0
    ).eval()
    official = {k.removeprefix("encoder."): v for k, v in file["model"].items() if k.startswith("encoder.")}
    assert official.keys() == swin_encoder(C, DEPTHS, HEADS).keys()
    ref.load_state_dict(swin_filter(official, ref), strict=True)

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for norm in model.backbone.out_norms:  # compare raw stage outputs
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        ours = model.backbone.forward_stages(x)
        theirs = ref.forward_intermediates(
            x, indices=4, norm=False, output_fmt="NCHW", intermediates_only=True
        )
    assert [t.shape[-1] for t in ours] == [56, 28, 14, 7]
    assert isinstance(theirs, list)
    for a, b in zip(ours, theirs, strict=True):
        assert isinstance(b, torch.Tensor)
        # our stage outputs pass through a fresh LayerNorm; apply the same to timm's
        b_norm = torch.nn.functional.layer_norm(b.permute(0, 2, 3, 1), (b.shape[1],)).permute(0, 3, 1, 2)
        assert (a - b_norm).abs().max().item() <= 1e-4
