"""MAE: masking, visible-only encoder, normalized-pixel loss on removed patches (He et al. 2021)."""

from __future__ import annotations

import torch

from vitbench.trainer.pretrain.mae import MaskedAutoencoder, patchify, random_masking
from vitbench.trainer.pretrain.recipes import EncoderConfig, MaeConfig


def _tiny() -> MaskedAutoencoder:
    arch = EncoderConfig(img_size=64, patch_size=16, embed_dim=96, depth=2, num_heads=3)
    return MaskedAutoencoder(arch, MaeConfig(decoder_dim=64, decoder_depth=1, decoder_heads=2))


def test_patchify_matches_the_release_einsum() -> None:
    imgs = torch.randn(2, 3, 64, 64)
    p, h = 16, 4
    x = imgs.reshape(2, 3, h, p, h, p)
    ref = torch.einsum("nchpwq->nhwpqc", x).reshape(2, h * h, p * p * 3)
    torch.testing.assert_close(patchify(imgs, p), ref)


def test_random_masking_removes_75_percent_per_sample() -> None:
    torch.manual_seed(0)
    ids_keep, mask = random_masking(196, 0.75, 8, torch.device("cpu"))
    assert ids_keep.shape == (8, 49)
    assert torch.equal(mask.sum(dim=1), torch.full((8,), 147.0))
    assert torch.all(mask.gather(1, ids_keep) == 0)  # kept ids are exactly the unmasked ones
    assert len({tuple(r.sort().values.tolist()) for r in ids_keep}) == 8  # a different mask per sample


def test_encoder_sees_only_visible_patches() -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    imgs = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    latent, ids_keep, mask = model.forward_encoder(imgs)
    assert latent.shape == (2, 1 + 4, 96)  # cls + 4 of 16 patches
    # Change the pixels of every removed patch: with the same mask the latent must not change.
    patches = patchify(imgs, 16).clone()
    patches[mask.bool()] = 100.0
    edited = patches.reshape(2, 4, 4, 16, 16, 3).permute(0, 5, 1, 3, 2, 4).reshape(2, 3, 64, 64)
    torch.manual_seed(1)
    latent2, ids2, _ = model.forward_encoder(edited)
    assert torch.equal(ids_keep, ids2)
    torch.testing.assert_close(latent, latent2)


def test_loss_is_normalized_pixel_mse_on_removed_patches_only() -> None:
    model = _tiny()
    imgs = torch.randn(2, 3, 64, 64) * 3 + 1
    mask = torch.zeros(2, 16)
    mask[:, :12] = 1
    target = patchify(imgs, 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    pred = torch.randn(2, 16, 768)
    expected = ((pred - target) ** 2).mean(-1)[:, :12].mean()
    torch.testing.assert_close(model.loss(imgs, pred, mask), expected)
    pred2 = pred.clone()
    pred2[:, 12:] += 5.0  # visible patches do not count
    torch.testing.assert_close(model.loss(imgs, pred2, mask), expected)


def test_training_reduces_the_loss_and_leaves_pos_embed_fixed() -> None:
    torch.manual_seed(0)
    model = _tiny()
    pos = model.pos_embed.detach().clone()
    imgs = torch.randn(4, 3, 64, 64).cumsum(-1) / 8  # smooth images: learnable structure
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model(imgs)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert torch.equal(model.pos_embed.detach(), pos)
    assert set(model.encoder_state_dict()) == {
        k for k in model.state_dict() if not k.startswith(("decoder_", "mask_token"))
    }
