"""MIMDet: conv stem, sampled tokens in training / all tokens at inference, MAE `_full` loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inits_formats import mae_file, mae_full_file
from torch import nn

from vitbench.trainer.inits import InitError, load_initialization
from vitbench.trainer.models.detector import build_detector
from vitbench.trainer.models.mimdet import MIMDetBackbone, sincos_pos_embed_2d
from vitbench.trainer.recipes import BackboneConfig, NeckConfig, Recipe, apply_overrides, get_recipe

C, DEPTH, DEC = 64, 2, 32


def _recipe(ratio: float = 0.25) -> Recipe:
    return apply_overrides(
        get_recipe("mimdet-b"),
        [
            f"backbone.embed_dim={C}",
            f"backbone.depth={DEPTH}",
            "backbone.num_heads=2",
            f"backbone.decoder_dim={DEC}",
            "backbone.decoder_depth=2",
            "backbone.decoder_heads=2",
            f"backbone.sample_ratio={ratio}",
            "backbone.global_blocks=0,1",
            "backbone.act_checkpoint=false",
            "input.image_size=128",
            "neck.out_channels=32",
            "heads.box_conv_dim=32",
            "heads.box_fc=64",
            "heads.mask_conv_dim=32",
        ],
    )


def test_conv_stem_layout() -> None:
    bb = MIMDetBackbone(
        BackboneConfig(
            kind="mimdet",
            embed_dim=C,
            depth=DEPTH,
            num_heads=2,
            global_blocks=(),
            decoder_depth=1,
            decoder_dim=DEC,
            decoder_heads=2,
        ),
        NeckConfig(kind="fpn"),
    )
    convs = [m for m in bb.stem.stages.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [C // 8, C // 4, C // 2, C]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.bias is None for c in convs)
    for stage in bb.stem.stages:
        assert isinstance(stage, nn.Sequential)
        assert isinstance(stage[1], nn.GroupNorm) and stage[1].num_groups == 1
        assert isinstance(stage[2], nn.GELU)


def test_shapes_and_strides() -> None:
    model = build_detector(_recipe(), num_classes=2)
    bb = model.backbone
    assert isinstance(bb, MIMDetBackbone)
    x = torch.randn(2, 3, 128, 128)
    for mode in (True, False):
        bb.train(mode)
        feats = bb.forward_features(x)
        assert [tuple(f.shape) for f in feats] == [
            (2, C // 4, 32, 32),
            (2, C // 2, 16, 16),
            (2, DEC, 8, 8),
            (2, DEC, 4, 4),
        ]
        out = bb(x)
        assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
        assert [o.shape[-1] for o in out.values()] == [32, 16, 8, 4, 2]  # strides 4, 8, 16, 32, 64
        assert all(o.shape[1] == bb.out_channels == 32 for o in out.values())
    with pytest.raises(ValueError, match="multiples of 16"):
        bb(torch.randn(1, 3, 120, 128))


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_training_samples_tokens_and_inference_uses_all(ratio: float) -> None:
    bb = build_detector(_recipe(ratio), num_classes=2).backbone
    seen: list[int] = []
    bb.net.blocks[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    x = torch.randn(2, 3, 128, 128)
    bb.train()
    a, b = bb.forward_features(x)[2], bb.forward_features(x)[2]
    assert seen == [int(64 * ratio)] * 2  # 8x8 = 64 stride-16 tokens
    assert not torch.allclose(a, b)  # a different random subset each step
    a.sum().backward()
    assert bb.conv_feat_proj.weight.grad is not None  # dropped positions are filled from the stem
    seen.clear()
    bb.eval()
    with torch.no_grad():
        c, d = bb.forward_features(x)[2], bb.forward_features(x)[2]
    assert seen == [64, 64]
    torch.testing.assert_close(c, d)


def test_sincos_matches_mae_formula() -> None:
    """Reference values from MAE's numpy ``get_2d_sincos_pos_embed`` for dim 8 on a 2x3 grid."""
    pe = sincos_pos_embed_2d(8, 2, 3)[0]
    assert pe.shape == (6, 8)
    # token (row 1, col 2): x = 2 -> [sin(2), sin(0.02), cos(2), cos(0.02)], y = 1 -> same with 1
    x = torch.tensor([2.0, 0.02])
    y = torch.tensor([1.0, 0.01])
    expected = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()])
    torch.testing.assert_close(pe[5], expected)


def test_mae_full_loads_encoder_and_first_decoder_blocks(tmp_path: Path) -> None:
    file = mae_full_file(C, DEPTH, dec_dim=DEC, dec_depth=8)
    path = tmp_path / "mae_pretrain_vit_base_full.pth"
    torch.save(file, path)
    recipe = _recipe()
    model = build_detector(recipe, num_classes=2)
    report = load_initialization(model, recipe, "mae_full", str(path))
    assert report.ok, report.failure_message()
    assert {k.split(".")[1] for k in report.missing} == {"stem", "conv_feat_proj", "fpn"}
    unexpected = set(report.unexpected)
    assert {"patch_embed.proj.weight", "pos_embed", "decoder_blocks.2.attn.qkv.weight"} <= unexpected
    assert not any(k.startswith(("decoder_blocks.0.", "decoder_blocks.1.")) for k in unexpected)
    assert {"cls_token", "mask_token", "decoder_pred.weight", "decoder_pos_embed"} <= set(report.dropped)
    state, src = model.state_dict(), file["model"]
    torch.testing.assert_close(
        state["backbone.decoder_blocks.1.mlp.fc1.weight"], src["decoder_blocks.1.mlp.fc1.weight"]
    )
    torch.testing.assert_close(
        state["backbone.net.blocks.1.attn.qkv.weight"], src["blocks.1.attn.qkv.weight"]
    )
    torch.testing.assert_close(state["backbone.net.norm.weight"], src["norm.weight"])
    torch.testing.assert_close(state["backbone.decoder_embed.weight"], src["decoder_embed.weight"])


def test_encoder_only_mae_is_refused_for_mimdet(tmp_path: Path) -> None:
    torch.save(mae_file(C, DEPTH), tmp_path / "mae.pth")
    recipe = _recipe()
    model = build_detector(recipe, num_classes=2)
    with pytest.raises(
        InitError,
        match=r"model tensors were not in the checkpoint, e\.g\. backbone\.decoder_embed.*Hint: .*'mae_full'",
    ):
        load_initialization(model, recipe, "mae", str(tmp_path / "mae.pth"))


def test_mimdet_b_parameter_count_matches_the_release() -> None:
    """MIMDet's README lists 127.96M parameters for MIMDet-ViT-B (main). Its count includes the fixed
    sin-cos encoder/decoder position tables stored at the 800 px config grid (50x50 + cls slot, 768 and
    512 wide), which here are computed on the fly instead of stored."""
    with torch.device("meta"):
        model = build_detector(get_recipe("mimdet-b"), num_classes=80)
    ours = sum(p.numel() for p in model.parameters())
    stored_tables = (50 * 50 + 1) * (768 + 512)
    assert round((ours + stored_tables) / 1e6, 2) == 127.96
