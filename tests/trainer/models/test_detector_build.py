"""Mask R-CNN assembly: tiny presets train and predict on CPU; heads and transform follow the recipe."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN

from vitbench.trainer.models.detector import SquareResizeTransform, build_detector
from vitbench.trainer.models.necks import LayerNorm2d
from vitbench.trainer.models.vit import ViT
from vitbench.trainer.recipes import apply_overrides, get_recipe

NUM_CLASSES = 3


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 128, 80, generator=g)]
    masks0 = torch.zeros(1, 96, 128, dtype=torch.uint8)
    masks0[0, 20:60, 10:70] = 1
    masks1 = torch.zeros(2, 128, 80, dtype=torch.uint8)
    masks1[0, 10:100, 5:60] = 1
    masks1[1, 40:70, 30:70] = 1
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 70.0, 60.0]]), "labels": torch.tensor([1]), "masks": masks0},
        {
            "boxes": torch.tensor([[5.0, 10.0, 60.0, 100.0], [30.0, 40.0, 70.0, 70.0]]),
            "labels": torch.tensor([2, 3]),
            "masks": masks1,
        },
    ]
    return images, targets


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("bench-tiny", []),
        ("vitdet-tiny", []),
        # windows that do not tile the 8x8 grid (padding path) and BEiT options
        ("bench-tiny", ["backbone.window_size=3", "backbone.qv_bias=true", "backbone.layer_scale=0.1"]),
    ],
)
def test_tiny_preset_gives_losses_gradients_and_predictions_on_cpu(recipe: str, overrides: list[str]) -> None:
    torch.manual_seed(0)
    model = build_detector(apply_overrides(get_recipe(recipe), overrides), NUM_CLASSES)
    images, targets = _batch()

    model.train()
    losses = model(images, targets)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    vit = model.backbone.net
    assert vit.patch_embed.proj.weight.grad is not None and vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert vit.pos_embed.grad is not None and vit.blocks[0].attn.qkv.weight.grad is not None
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad is not None
    rel_pos = {n: p for n, p in vit.named_parameters() if "rel_pos" in n}
    assert rel_pos  # both tiny presets use relative position (shared tables or decomposed)
    for name, param in rel_pos.items():  # zero-initialized, yet they learn through the attention mask
        assert param.grad is not None and param.grad.abs().sum() > 0, name

    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out, img in zip(outputs, images, strict=True):
        n = out["boxes"].shape[0]
        assert out["scores"].shape == (n,) and out["labels"].shape == (n,)
        assert out["masks"].shape == (n, 1, *img.shape[-2:])  # pasted back to the original image size
        if n:
            assert out["labels"].min() >= 1 and out["labels"].max() <= NUM_CLASSES
            assert out["boxes"][:, 2].max() <= img.shape[-1] and out["boxes"][:, 3].max() <= img.shape[-2]

    # Eval mode is differentiable too (frozen-BN fine-tuning, saliency): scores reach the backbone.
    model.zero_grad(set_to_none=True)
    model.roi_heads.score_thresh = 0.0
    outputs = model(images)
    assert outputs[0]["scores"].numel() > 0
    sum(o["scores"].sum() + o["masks"].sum() for o in outputs).backward()
    assert vit.blocks[-1].mlp.fc2.weight.grad is not None
    assert vit.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0


def test_image_without_objects_gives_finite_losses() -> None:
    model = build_detector(get_recipe("bench-tiny"), NUM_CLASSES).train()
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 128, 128, dtype=torch.uint8),
    }
    losses = model([torch.rand(3, 128, 128)], [empty])
    assert float(losses["loss_mask"].detach()) == 0.0 and torch.isfinite(losses["loss_classifier"])


@pytest.mark.parametrize(("recipe", "norm"), [("bench-tiny", nn.BatchNorm2d), ("vitdet-tiny", LayerNorm2d)])
def test_heads_follow_the_study(recipe: str, norm: type[nn.Module]) -> None:
    r = get_recipe(recipe)
    model = build_detector(r, NUM_CLASSES)
    assert isinstance(model, MaskRCNN)
    assert isinstance(model.backbone.net, ViT)
    assert isinstance(model.backbone.neck, nn.Module)
    # 2-conv RPN head
    assert len(model.rpn.head.conv) == 2
    # 4 conv (+norm) + 1 fc box head, class-specific box regression
    box_head = model.roi_heads.box_head
    assert sum(isinstance(m, nn.Conv2d) for m in box_head.modules()) == 4
    assert sum(isinstance(m, norm) for m in box_head.modules()) == 4
    assert [m.out_features for m in box_head.modules() if isinstance(m, nn.Linear)] == [r.heads.box_fc]
    predictor = model.roi_heads.box_predictor
    assert predictor.cls_score.out_features == NUM_CLASSES + 1
    assert predictor.bbox_pred.out_features == 4 * (NUM_CLASSES + 1)
    # 4-conv mask head with norm, class-specific masks
    mask_head = model.roi_heads.mask_head
    assert sum(isinstance(m, nn.Conv2d) for m in mask_head.modules()) == 4
    assert sum(isinstance(m, norm) for m in mask_head.modules()) == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == NUM_CLASSES + 1


def test_transform_pads_to_the_fixed_square_with_recipe_normalization() -> None:
    r = get_recipe("vitdet-tiny")
    model = build_detector(r, NUM_CLASSES)
    transform = model.transform
    assert isinstance(transform, SquareResizeTransform)
    mean = torch.tensor(r.input.pixel_mean).view(3, 1, 1) / 255
    images = [mean.expand(3, 50, 100).clone(), mean.expand(3, 300, 120).clone()]

    transform.eval()
    batch, _ = transform(images)
    assert batch.tensors.shape == (2, 3, 128, 128)
    assert batch.image_sizes == [(64, 128), (128, 51)]  # longest side resized to image_size
    torch.testing.assert_close(batch.tensors, torch.zeros_like(batch.tensors), atol=1e-5, rtol=0)

    transform.train()  # images that fit are kept at their (jittered) size; larger ones shrink
    batch, _ = transform([torch.rand(3, 50, 100), torch.rand(3, 300, 120)])
    assert batch.tensors.shape == (2, 3, 128, 128)
    assert batch.image_sizes == [(50, 100), (128, 51)]


def test_bad_class_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_detector(get_recipe("bench-tiny"), 0)


def test_predictions_do_not_depend_on_the_first_image_the_model_saw() -> None:
    """The RoI poolers work on the S×S canvas: a landscape first image (height < S/√2) must not change
    the level scales. torchvision infers them from the first batch, which gave 1/2 instead of 1/4 for p2."""
    recipe = apply_overrides(get_recipe("bench-tiny"), ["heads.score_thresh=0.0"])
    torch.manual_seed(0)
    first_landscape = build_detector(recipe, 3).eval()
    first_square = build_detector(recipe, 3).eval()
    first_square.load_state_dict(first_landscape.state_dict())
    torch.manual_seed(1)
    landscape, square = torch.rand(3, 60, 128), torch.rand(3, 128, 128)
    with torch.no_grad():
        first_square([square])
        a = first_landscape([landscape])[0]
        b = first_square([landscape])[0]
    strides = [1 / s for s in (4, 8, 16, 32)]
    assert first_landscape.roi_heads.box_roi_pool.scales == strides
    assert first_landscape.roi_heads.mask_roi_pool.scales == strides
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    torch.testing.assert_close(a["boxes"], b["boxes"])
    torch.testing.assert_close(a["masks"], b["masks"])
