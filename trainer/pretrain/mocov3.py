"""MoCo v3 for ViT (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers", arXiv 2104.02057).

Two augmented views go through a base encoder (ViT + 3-layer projector MLP named ``head``) and a
predictor (2-layer MLP); a momentum encoder (an EMA copy of base encoder + projector, no gradient)
embeds the other view as the target. Loss: symmetric InfoNCE ``ctr(q1, k2) + ctr(q2, k1)`` where
``ctr(q, k) = 2 T · CE(q·kᵀ / T, diagonal)`` on l2-normalized features (keys gathered across ranks
under DDP). The momentum follows a half-cosine from ``m0`` to 1 over training. As in the paper, the
patch projection is frozen at its random initialization ("stop-grad conv1") and the position
embedding is the fixed MoCo v3 sin-cos table. MLP layers are ``Linear(bias=False) → BN → ReLU``, the
last with an affine-free BN, so the module names equal the release's (``base_encoder.head.0`` ...,
``predictor.0`` ...).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vitbench.trainer.pretrain.encoder import PretrainViT
from vitbench.trainer.pretrain.recipes import EncoderConfig, MoCoV3Config


def build_mlp(
    num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool = True
) -> nn.Sequential:
    """MoCo v3's MLP: ``num_layers`` × Linear(bias=False), BN + ReLU between, affine-free BN at the end."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        d_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class ViTWithProjector(PretrainViT):
    """ViT (MoCo v3 sin-cos pos-embed, frozen patch projection) whose ``head`` is the projector MLP;
    ``forward`` returns the projection of the cls token after the final norm: (B, dim)."""

    def __init__(self, arch: EncoderConfig, cfg: MoCoV3Config) -> None:
        super().__init__(arch, pos_embed="mocov3")
        # MoCo v3 initialization: q, k, v weights xavier-uniform as three separate matrices; cls N(0, 1e-6).
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and name.endswith("qkv"):
                bound = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                nn.init.uniform_(m.weight, -bound, bound)
        nn.init.normal_(self.cls_token, std=1e-6)
        if cfg.stop_grad_patch_embed:
            self.patch_embed.proj.weight.requires_grad_(False)
            if self.patch_embed.proj.bias is not None:
                self.patch_embed.proj.bias.requires_grad_(False)
        self.head = build_mlp(3, arch.embed_dim, cfg.mlp_dim, cfg.dim)

    def forward(self, images: Tensor) -> Tensor:  # type: ignore[override]
        return self.head(super().forward(images)[:, 0])


def momentum_at(progress: float, m0: float, cosine: bool = True) -> float:
    """EMA momentum at ``progress`` ∈ [0, 1] of training: ``1 - (1 - m0) (cos(π p) + 1) / 2`` (m0 → 1)."""
    if not cosine:
        return m0
    p = min(max(progress, 0.0), 1.0)
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * p)) * (1.0 - m0)


def _gather(x: Tensor) -> tuple[Tensor, int]:
    """All ranks' rows of ``x`` (no gradient) and this rank's offset; (x, 0) when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0), dist.get_rank() * x.shape[0]


def contrastive_loss(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """InfoNCE of queries (B, d) against keys (B, d) (positives on the diagonal), scaled by 2T."""
    # fp32 similarities: at the 1/T = 5 scale, half-precision rounding of near-equal cosines is the loss
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    k_all, offset = _gather(k)
    logits = q @ k_all.t() / temperature  # (B, B * world)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


class MoCoV3(nn.Module):
    """``base_encoder``, ``momentum_encoder`` (same architecture, EMA) and ``predictor`` (``cfg``: the
    recipe's ``mocov3`` section; momentum and crop scale are the task's and the data pipeline's)."""

    def __init__(self, arch: EncoderConfig, cfg: MoCoV3Config = MoCoV3Config()) -> None:
        super().__init__()
        self.temperature = cfg.temperature
        self.base_encoder = ViTWithProjector(arch, cfg)
        self.momentum_encoder = copy.deepcopy(self.base_encoder)
        for p in self.momentum_encoder.parameters():
            p.requires_grad_(False)
        self.predictor = build_mlp(2, cfg.dim, cfg.mlp_dim, cfg.dim)

    @torch.no_grad()
    def update_momentum_encoder(self, m: float) -> None:
        """``θ_k ← m θ_k + (1 − m) θ_q`` over parameters (BN running stats are the encoder's own)."""
        for p_b, p_m in zip(self.base_encoder.parameters(), self.momentum_encoder.parameters(), strict=True):
            p_m.mul_(m).add_(p_b.detach(), alpha=1.0 - m)

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Two (B, 3, H, W) views of the same images -> scalar symmetric contrastive loss.

        Call :meth:`update_momentum_encoder` once per optimizer step (the release updates it inside
        ``forward``, before computing the keys; the engine does it after the step — the same order).
        """
        q1 = self.predictor(self.base_encoder(view1))
        q2 = self.predictor(self.base_encoder(view2))
        with torch.no_grad():
            k1 = self.momentum_encoder(view1)
            k2 = self.momentum_encoder(view2)
        return contrastive_loss(q1, k2, self.temperature) + contrastive_loss(q2, k1, self.temperature)
