"""The pre-training encoder: release parameter names, timm-equal compute, the two sin-cos formulas."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from timm_refs import timm_vit

from vitbench.trainer.pretrain.encoder import PretrainViT, sincos_pos_embed_2d
from vitbench.trainer.pretrain.recipes import EncoderConfig, SupervisedConfig
from vitbench.trainer.pretrain.supervised import ViTClassifier

TINY = EncoderConfig(img_size=64, patch_size=16, embed_dim=96, depth=4, num_heads=3)


def _timm(**kw: Any) -> VisionTransformer:
    """timm's ViT (with its cls token) at :data:`TINY`'s shape: the releases' reference implementation."""
    return timm_vit(TINY.img_size, TINY.embed_dim, TINY.depth, TINY.num_heads, **kw)


def _mae_reference(dim: int, g: int) -> np.ndarray:
    """The MAE release's formula (util/pos_embed.py), written out with numpy's xy meshgrid."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32)), axis=0)
    emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


def _mocov3_reference(dim: int, g: int) -> torch.Tensor:
    """The MoCo v3 release's formula (vits.py), with torch's default (ij) meshgrid."""
    gw, gh = torch.meshgrid(
        torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij"
    )
    pd = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(pd, dtype=torch.float32) / pd))
    out_w = torch.einsum("m,d->md", gw.flatten(), omega)
    out_h = torch.einsum("m,d->md", gh.flatten(), omega)
    emb = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), emb], dim=0)


@pytest.mark.parametrize("dim,g", [(96, 4), (768, 14)])
def test_sincos_tables_equal_the_releases_formulas(dim: int, g: int) -> None:
    mae = sincos_pos_embed_2d(dim, g, "mae")
    assert mae.shape == (1, 1 + g * g, dim)
    np.testing.assert_allclose(mae[0].numpy(), _mae_reference(dim, g), atol=1e-6)
    moco = sincos_pos_embed_2d(dim, g, "mocov3")
    torch.testing.assert_close(moco[0], _mocov3_reference(dim, g), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mae, moco)  # two different formulas (reference §5.1)


def test_sincos_needs_dim_divisible_by_4() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(98, 4)


def test_encoder_state_dict_loads_strictly_into_timm_and_computes_the_same() -> None:
    torch.manual_seed(0)
    enc = PretrainViT(TINY).eval()
    ref = _timm(num_classes=0, qkv_bias=True)
    missing, unexpected = ref.load_state_dict(enc.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref.forward_features(x), atol=1e-5, rtol=1e-4)
    assert not enc.pos_embed.requires_grad  # fixed sin-cos, as MAE


@pytest.mark.parametrize("pool", ["cls", "avg"])
def test_classifier_is_a_timm_vit(pool: str) -> None:
    torch.manual_seed(0)
    clf = ViTClassifier(TINY, 3, SupervisedConfig(pool=pool)).eval()  # type: ignore[arg-type]
    ref = _timm(num_classes=3, global_pool="token" if pool == "cls" else "avg")
    ref.load_state_dict(clf.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), ref(x), atol=1e-5, rtol=1e-4)
    assert clf.pos_embed.requires_grad  # DeiT learns its position embedding
