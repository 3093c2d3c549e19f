"""Feature pyramids: p2–p6 at strides 4–64, detectron2 naming, norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitbench.trainer.models.detector import build_backbone
from vitbench.trainer.models.necks import FPN, LayerNorm2d, MultiScaleFPN, SimpleFeaturePyramid, make_norm
from vitbench.trainer.recipes import get_recipe

STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


@pytest.mark.parametrize("recipe", ["bench-tiny", "vitdet-tiny"])
def test_backbone_with_neck_gives_strides_4_to_64(recipe: str) -> None:
    r = get_recipe(recipe)
    backbone = build_backbone(r).eval()
    size = r.input.image_size
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, size, size))
    assert list(out) == list(STRIDES)
    for name, stride in STRIDES.items():
        assert out[name].shape == (2, r.neck.out_channels, size // stride, size // stride), name
    assert backbone.out_channels == r.neck.out_channels


@pytest.mark.parametrize("neck_cls", [MultiScaleFPN, SimpleFeaturePyramid])
def test_necks_map_stride16_taps_to_strides_4_to_64(neck_cls: type[nn.Module]) -> None:
    neck = neck_cls(64, 32, "gn").eval()
    taps = [torch.randn(1, 64, 16, 16) for _ in range(4)]  # a 256-px image at stride 16
    out = neck(taps)
    assert {k: 256 // v.shape[-1] for k, v in out.items()} == STRIDES
    assert all(v.shape[1] == 32 for v in out.values())


def test_fpn_over_hierarchical_maps() -> None:
    fpn = FPN([24, 48, 96, 192], 32, "bn").eval()
    maps = [torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate([24, 48, 96, 192])]
    out = fpn(maps)
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fpn.modules()) == 8  # lateral + output per level
    with pytest.raises(ValueError, match="4 maps"):
        FPN([8, 8, 8], 8, None)


def test_multiscale_adapter_layout_follows_the_study() -> None:
    neck = MultiScaleFPN(768, 256, "syncbn")
    up4, up2, ident, down = neck.adapters
    assert isinstance(up4, nn.Sequential)
    assert [type(m) for m in up4] == [nn.ConvTranspose2d, nn.GroupNorm, nn.GELU, nn.ConvTranspose2d]
    assert up4[1].num_groups == 32 and up4[0].out_channels == up4[3].out_channels == 768  # keeps ViT width
    assert isinstance(up2, nn.ConvTranspose2d) and up2.out_channels == 768
    assert isinstance(ident, nn.Identity) and isinstance(down, nn.MaxPool2d)


def test_simple_pyramid_uses_detectron2_names_and_counts() -> None:
    neck = SimpleFeaturePyramid(768, 256, "ln")
    shapes = {k: tuple(v.shape) for k, v in neck.state_dict().items()}
    assert shapes["simfp_2.0.weight"] == (768, 384, 2, 2)
    assert shapes["simfp_2.1.weight"] == (384,)  # LN between the two transposed convs
    assert shapes["simfp_2.3.weight"] == (384, 192, 2, 2)
    assert shapes["simfp_2.4.weight"] == (256, 192, 1, 1) and "simfp_2.4.bias" not in shapes
    assert shapes["simfp_2.4.norm.weight"] == (256,)
    assert shapes["simfp_5.1.norm.bias"] == (256,)
    # detectron2's SimpleFeaturePyramid(ViT-B, 256, LN) has 5.56M parameters (detectron2 projects/ViTDet).
    assert sum(p.numel() for p in neck.parameters()) == 5_560_000


def test_layer_norm_2d_normalizes_channels() -> None:
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 6, 3, 5)
    ref = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)


def test_make_norm_kinds() -> None:
    assert isinstance(make_norm("bn")(64), nn.BatchNorm2d)
    assert isinstance(make_norm("syncbn")(64), nn.BatchNorm2d)  # converted by the engine when distributed
    assert isinstance(make_norm("ln")(64), LayerNorm2d)
    gn = make_norm("gn")(96)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("xx")  # type: ignore[arg-type]
