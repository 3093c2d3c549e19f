"""Every pre-training method trains under autocast (the ViT-B/L recipes run in fp16/bf16 on GPUs): a
half-precision forward gives a finite loss close to fp32's, and its backward reaches every trained weight."""

from __future__ import annotations

import pytest
import torch

from vitbench.trainer.pretrain.recipes import get_pretrain_recipe
from vitbench.trainer.pretrain.task import build_pretrain_model


@pytest.mark.parametrize("method", ["mae", "mocov3", "supervised"])
def test_bf16_autocast_step_matches_fp32(method: str) -> None:
    recipe = get_pretrain_recipe(method, "tiny")
    torch.manual_seed(0)
    model = build_pretrain_model(recipe, num_classes=3).train()
    size = recipe.encoder.img_size
    x = torch.randn(8, 3, size, size)  # MoCo v3's BN heads need more than two samples to be smooth
    args: tuple[torch.Tensor, ...] = (x, x.flip(-1)) if method == "mocov3" else (x,)

    def loss_of(enabled: bool) -> torch.Tensor:
        torch.manual_seed(1)  # same masks / same views in both runs
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = model(*args)
        if method == "supervised":  # (B, num_classes) logits
            return torch.nn.functional.cross_entropy(out.float(), torch.arange(8) % 3)
        return out

    ref = loss_of(False)
    half = loss_of(True)
    assert torch.isfinite(half)
    assert half.item() == pytest.approx(ref.item(), rel=0.05)
    half.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient under autocast for {missing[:5]}"
