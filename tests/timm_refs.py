"""timm's Vision Transformer built as the independent reference of the ViT tests (timm names and math)."""

from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import VisionTransformer


def timm_vit(img_size: int, embed_dim: int, depth: int, num_heads: int, **kw: Any) -> VisionTransformer:
    """timm's ``VisionTransformer`` with 16-px patches in eval mode; ``kw`` as timm takes them."""
    return VisionTransformer(
        img_size=img_size, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kw
    ).eval()


def timm_backbone_vit(img_size: int, embed_dim: int, depth: int, num_heads: int) -> VisionTransformer:
    """What our detector ViT computes: no cls token, no pooling or head, qkv bias."""
    return timm_vit(
        img_size, embed_dim, depth, num_heads, class_token=False, global_pool="", num_classes=0, qkv_bias=True
    )
