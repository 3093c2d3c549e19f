"""Supervised ViT classification pre-training, DeiT/timm style (Touvron et al. 2020, arXiv 2012.12877).

The :class:`PretrainViT` encoder with a learned position embedding and a linear ``head`` on either the
cls token after the final ``norm`` (DeiT, ``pool="cls"``) or the mean of the patch tokens through
``fc_norm`` (timm ``global_pool="avg"``, where ``norm`` is then not used). Loss: cross-entropy with
label smoothing. The state dict carries timm's names (``head.weight`` (K, C), ``head.bias``), so it is
the ``{'model': ...}`` content of a DeiT release file.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from vitbench.trainer.pretrain.encoder import PretrainViT


class ViTClassifier(PretrainViT):
    """ViT + classification head; ``forward(images)`` returns (B, num_classes) logits."""

    def __init__(
        self,
        *,
        img_size: int,
        num_classes: int,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.1,
        pool: Literal["cls", "avg"] = "cls",
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            pos_embed="learned",
        )
        if num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got {num_classes}")
        self.pool = pool
        self.label_smoothing = label_smoothing
        self.fc_norm: nn.Module | None = None
        if pool == "avg":  # timm: with global_pool="avg", fc_norm replaces the final norm
            self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.norm = nn.Identity()  # type: ignore[assignment]
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:  # type: ignore[override]
        """(B, 3, H, W) -> (B, num_classes) logits."""
        tokens = self.embed(images)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = self.run_blocks(cls, tokens)  # (B, 1 + N, C), before the final norm
        if self.pool == "avg":
            assert self.fc_norm is not None
            feat = self.fc_norm(x[:, 1:].mean(dim=1))
        else:
            feat = self.norm(x)[:, 0]
        return self.head(feat)

    def loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy with label smoothing; returns (loss, top-1 accuracy of the batch)."""
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        return loss, acc
