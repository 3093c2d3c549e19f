"""Supervised ViT classification pre-training, DeiT/timm style (Touvron et al. 2020, arXiv 2012.12877).

The :class:`PretrainViT` encoder with a learned position embedding and a linear ``head`` on either the
cls token after the final ``norm`` (DeiT, ``pool="cls"``) or the mean of the patch tokens through
``fc_norm`` (timm ``global_pool="avg"``, where ``norm`` is then not used). Loss: cross-entropy with
label smoothing. The state dict carries timm's names (``head.weight`` (K, C), ``head.bias``), so it is
the ``{'model': ...}`` content of a DeiT release file.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vitbench.trainer.pretrain.encoder import PretrainViT
from vitbench.trainer.pretrain.recipes import EncoderConfig, SupervisedConfig


class ViTClassifier(PretrainViT):
    """ViT + classification head; ``forward(images)`` returns (B, num_classes) logits. Stochastic depth
    is ``arch.drop_path``; ``cfg`` is the recipe's ``supervised`` section (``crop_min``: the data's)."""

    def __init__(
        self, arch: EncoderConfig, num_classes: int, cfg: SupervisedConfig = SupervisedConfig()
    ) -> None:
        super().__init__(arch, drop_path=arch.drop_path, pos_embed="learned")
        if num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got {num_classes}")
        self.pool = cfg.pool
        self.label_smoothing = cfg.label_smoothing
        self.fc_norm: nn.Module | None = None
        if cfg.pool == "avg":  # timm: with global_pool="avg", fc_norm replaces the final norm
            self.fc_norm = nn.LayerNorm(arch.embed_dim, eps=1e-6)
            self.norm = nn.Identity()  # type: ignore[assignment]
        self.head = nn.Linear(arch.embed_dim, num_classes)
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
