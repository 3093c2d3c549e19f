"""MoCo v3: release module names, momentum schedule and EMA, symmetric InfoNCE (Chen et al. 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vitbench.trainer.pretrain.mocov3 import MoCoV3, contrastive_loss, momentum_at
from vitbench.trainer.pretrain.recipes import EncoderConfig, MoCoV3Config


def _tiny() -> MoCoV3:
    arch = EncoderConfig(img_size=64, patch_size=16, embed_dim=96, depth=2, num_heads=3)
    return MoCoV3(arch, MoCoV3Config(dim=32, mlp_dim=64))


def test_module_names_are_the_releases() -> None:
    keys = set(_tiny().state_dict())
    for k in (
        "base_encoder.head.0.weight",
        "base_encoder.head.1.running_mean",
        "base_encoder.head.3.weight",
        "base_encoder.head.6.weight",
        "base_encoder.head.7.running_var",
        "momentum_encoder.blocks.1.mlp.fc2.weight",
        "predictor.0.weight",
        "predictor.1.weight",
        "predictor.3.weight",
        "predictor.4.running_mean",
        "base_encoder.pos_embed",
        "base_encoder.cls_token",
        "base_encoder.norm.weight",
    ):
        assert k in keys, k
    assert "base_encoder.head.7.weight" not in keys  # last BN has no affine parameters
    assert "base_encoder.head.0.bias" not in keys  # linears have no bias


def test_momentum_schedule_goes_from_m0_to_one_on_a_half_cosine() -> None:
    assert momentum_at(0.0, 0.99) == 0.99
    assert momentum_at(1.0, 0.99) == 1.0
    assert math.isclose(momentum_at(0.5, 0.99), 0.995)
    assert momentum_at(0.7, 0.99, cosine=False) == 0.99


def test_ema_update_and_no_gradient_to_the_momentum_encoder() -> None:
    torch.manual_seed(0)
    model = _tiny()
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    assert not model.base_encoder.patch_embed.proj.weight.requires_grad  # stop-grad patch projection
    before = {k: v.clone() for k, v in model.momentum_encoder.named_parameters()}
    with torch.no_grad():
        for p in model.base_encoder.parameters():
            p.add_(1.0)
    model.update_momentum_encoder(0.9)
    for name, p_b in model.base_encoder.named_parameters():
        torch.testing.assert_close(
            dict(model.momentum_encoder.named_parameters())[name], 0.9 * before[name] + 0.1 * p_b
        )
    x1, x2 = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    model(x1, x2).backward()
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert model.predictor[0].weight.grad is not None
    assert model.base_encoder.blocks[0].attn.qkv.weight.grad is not None


def test_contrastive_loss_is_2t_cross_entropy_on_normalized_features() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(5, 8), torch.randn(5, 8)
    t = 0.2
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / t
    expected = 2 * t * -torch.log_softmax(logits, dim=1).diagonal().mean()
    torch.testing.assert_close(contrastive_loss(q, k, t), expected)
    # Matching pairs give a lower loss than unrelated ones.
    assert contrastive_loss(q, q + 0.01 * torch.randn(5, 8), t) < contrastive_loss(q, k, t)
