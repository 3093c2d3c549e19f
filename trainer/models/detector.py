"""Mask R-CNN with a plain-ViT backbone, assembled from torchvision's detection parts.

``build_detector(recipe, num_classes)`` returns a ``torchvision.models.detection.MaskRCNN`` with:

- ``model.backbone.net``: the :class:`~trainer.models.vit.ViT` (upstream parameter names) and
  ``model.backbone.neck``: :class:`~trainer.models.necks.MultiScaleFPN` (the study) or
  :class:`~trainer.models.necks.SimpleFeaturePyramid` (ViTDet), giving p2–p6;
- the study's upgraded heads: 2-conv RPN head, 4conv+1fc box head with norm, 4-conv mask head with
  norm, class-specific box regression; RoIAlign 7x7 (box) / 14x14 (mask) with adaptive sampling;
- a transform that resizes the longest image side to ``input.image_size`` and pads every batch to
  the fixed square ``image_size`` x ``image_size`` canvas, normalized with the recipe's mean/std.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from vitbench.trainer.models.necks import LEVELS, STRIDES, MultiScaleFPN, SimpleFeaturePyramid, make_norm
from vitbench.trainer.models.vit import ViT
from vitbench.trainer.recipes import Recipe

__all__ = [
    "SquareResizeTransform",
    "ViTBackbone",
    "build_backbone",
    "build_detector",
    "build_vit",
    "vit_tap_indices",
]


class ViTBackbone(nn.Module):
    """ViT + neck: (B, 3, S, S) normalized images -> ``OrderedDict`` p2–p6 with ``out_channels`` each."""

    def __init__(self, net: ViT, neck: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.net = net
        self.neck = neck
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats: OrderedDict[str, Tensor] = self.neck(self.net(x))
        return feats


class SquareResizeTransform(GeneralizedRCNNTransform):
    """Resize the longest side to ``image_size`` and pad the batch to ``image_size`` x ``image_size``.

    Input images are RGB floats in [0, 1]; normalization uses mean/std on that scale. In training an
    image that already fits the canvas is kept at its size (large-scale jitter has chosen it) and only
    larger ones are shrunk; in eval every image is resized so its longest side is ``image_size``
    (detectron2's ``ResizeShortestEdge(S, max_size=S)`` + ``square_pad``). Padding is zeros after
    normalization (the mean colour), at the bottom / right.
    """

    def __init__(self, image_size: int, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__(
            min_size=image_size,
            max_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
            size_divisible=image_size,  # every side <= S is padded up to exactly S
        )
        self.image_size = image_size

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        if self.training and max(image.shape[-2:]) <= self.image_size:
            return image, target
        return super().resize(image, target)


def vit_tap_indices(recipe: Recipe) -> tuple[int, ...]:
    """Block indexes whose outputs feed the neck: d/4, d/2, 3d/4, d (0-based) or just the last block."""
    depth = recipe.backbone.depth
    if recipe.neck.kind == "multiscale_fpn":
        return tuple(depth * k // 4 - 1 for k in (1, 2, 3, 4))
    return (depth - 1,)


def build_vit(recipe: Recipe) -> ViT:
    """The plain ViT of ``recipe`` (``backbone.kind == "vit"``), randomly initialized."""
    bb = recipe.backbone
    return ViT(
        img_size=recipe.input.image_size,
        patch_size=bb.patch_size,
        embed_dim=bb.embed_dim,
        depth=bb.depth,
        num_heads=bb.num_heads,
        mlp_ratio=bb.mlp_ratio,
        window_size=bb.window_size,
        global_blocks=bb.global_blocks,
        rel_pos=bb.rel_pos,
        layer_scale=bb.layer_scale,
        qv_bias=bb.qv_bias,
        drop_path=bb.drop_path,
        act_checkpoint=bb.act_checkpoint,
        pretrain_img_size=bb.pretrain_img_size,
        out_indices=vit_tap_indices(recipe),
        init_style=bb.init_style,
    )


def build_backbone(recipe: Recipe) -> nn.Module:
    """Backbone + neck producing p2–p6; has ``out_channels``. MIMDet / Swin come from their modules."""
    kind = recipe.backbone.kind
    if kind == "mimdet":
        from vitbench.trainer.models.mimdet import build_mimdet_backbone

        return build_mimdet_backbone(recipe)
    if kind == "swin":
        from vitbench.trainer.models.swin import build_swin_backbone

        return build_swin_backbone(recipe)
    net = build_vit(recipe)
    neck_cfg = recipe.neck
    neck: nn.Module
    if neck_cfg.kind == "multiscale_fpn":
        neck = MultiScaleFPN(recipe.backbone.embed_dim, neck_cfg.out_channels, neck_cfg.norm)
    elif neck_cfg.kind == "simple_fpn":
        neck = SimpleFeaturePyramid(recipe.backbone.embed_dim, neck_cfg.out_channels, neck_cfg.norm)
    else:
        raise ValueError(f"neck.kind {neck_cfg.kind!r} does not fit a plain ViT")
    return ViTBackbone(net, neck, neck_cfg.out_channels)


def canvas_roi_align(output_size: int) -> MultiScaleRoIAlign:
    """RoIAlign over p2–p5 with the level scales fixed to 1/stride of the S×S canvas.

    torchvision infers the scales on the first call from the largest image size of that batch, rounding
    ``feature / image`` height to a power of two. Our transform always pads to the S×S canvas, so for a
    landscape image the inferred scale is off by 2×: a 640×427 COCO image on a 1024 canvas gives 1/2 for p2
    (256 / 683 rounds to 2^-1) instead of 1/4, and every later batch of the process keeps it.
    """
    names = list(LEVELS[:4])
    pooler = MultiScaleRoIAlign(names, output_size=output_size, sampling_ratio=0)
    pooler.scales = [1.0 / STRIDES[n] for n in names]
    # levels k = -log2(scale): p2..p5 -> 2..5, mapped as torchvision's FPN level mapper does
    pooler.map_levels = initLevelMapper(2, 5, pooler.canonical_scale, pooler.canonical_level)
    return pooler


def build_detector(recipe: Recipe, num_classes: int) -> MaskRCNN:
    """Mask R-CNN for ``num_classes`` object classes (background excluded; COCO: 80).

    Call under ``with torch.device("meta"):`` to count parameters of large models without memory.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (object classes, background excluded), got {num_classes}")
    backbone = build_backbone(recipe)
    C = int(backbone.out_channels)  # type: ignore[arg-type]
    h = recipe.heads
    head_norm = make_norm(h.norm)
    anchors = AnchorGenerator(
        sizes=tuple((s,) for s in h.anchor_sizes), aspect_ratios=(tuple(h.aspect_ratios),) * len(LEVELS)
    )
    rpn_head = RPNHead(C, anchors.num_anchors_per_location()[0], conv_depth=h.rpn_convs)
    box_head = FastRCNNConvFCHead((C, 7, 7), [h.box_conv_dim] * h.box_convs, [h.box_fc], norm_layer=head_norm)
    mask_head = MaskRCNNHeads(C, [h.mask_conv_dim] * h.mask_convs, 1, norm_layer=head_norm)
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=h.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=h.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=h.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=h.rpn_post_nms_top_n_test,
        rpn_nms_thresh=h.rpn_nms_thresh,
        rpn_batch_size_per_image=h.rpn_batch_size_per_image,
        rpn_positive_fraction=h.rpn_positive_fraction,
        box_roi_pool=canvas_roi_align(output_size=7),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(h.box_fc, num_classes + 1),
        box_score_thresh=h.score_thresh,
        box_nms_thresh=h.nms_thresh,
        box_detections_per_img=h.detections_per_img,
        box_batch_size_per_image=h.roi_batch_size_per_image,
        box_positive_fraction=h.roi_positive_fraction,
        bbox_reg_weights=h.bbox_reg_weights,
        mask_roi_pool=canvas_roi_align(output_size=14),
        mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(h.mask_conv_dim, h.mask_conv_dim, num_classes + 1),
    )
    model.transform = SquareResizeTransform(
        recipe.input.image_size,
        [m / 255.0 for m in recipe.input.pixel_mean],
        [s / 255.0 for s in recipe.input.pixel_std],
    )
    return model


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
