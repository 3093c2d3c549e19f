"""Masked autoencoder pre-training (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners",
arXiv 2111.06377).

Per image, a random ``mask_ratio`` share of the patches is removed (per-sample shuffle of uniform
noise); the encoder sees only the visible patches (plus cls), a light decoder gets the encoded tokens
back in place with a shared learned mask token for every removed patch, adds its own fixed sin-cos
position embedding and predicts each patch's pixels; the loss is the mean squared error on the
removed patches only, against per-patch normalized pixels (``norm_pix``). Parameter names are the
release's (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``,
``decoder_norm``, ``decoder_pred``), so the state dict *is* the ``_full`` checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vitbench.trainer.models.vit import Block
from vitbench.trainer.pretrain.encoder import PretrainViT, sincos_pos_embed_2d
from vitbench.trainer.pretrain.recipes import EncoderConfig, MaeConfig


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, 3, H, W) -> (B, N, p*p*3), patches in row-major order, pixels (row, col, channel) inside."""
    B, C, H, W = images.shape
    h, w = H // patch, W // patch
    x = images.reshape(B, C, h, patch, w, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, patch * patch * C)


def random_masking(
    n_tokens: int, mask_ratio: float, batch: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per-sample random masking: returns ``ids_keep`` (B, n_keep) and ``mask`` (B, N) with 1 = removed.

    ``n_keep = int(N * (1 - mask_ratio))``; kept ids are the ``n_keep`` smallest of uniform noise.
    """
    n_keep = int(n_tokens * (1 - mask_ratio))
    if n_keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch out of {n_tokens}")
    noise = torch.rand(batch, n_tokens, device=device)
    ids_shuffle = noise.argsort(dim=1)  # (B, N): ascending noise, first n_keep are kept
    ids_keep = ids_shuffle[:, :n_keep]
    mask = torch.ones(batch, n_tokens, device=device)
    mask.scatter_(1, ids_keep, 0.0)
    return ids_keep, mask


class MaskedAutoencoder(PretrainViT):
    """MAE: the :class:`PretrainViT` encoder (MAE sin-cos pos-embed) plus a light decoder (``cfg``: the
    recipe's ``mae`` section; its ``crop_min`` belongs to the data pipeline)."""

    def __init__(self, arch: EncoderConfig, cfg: MaeConfig = MaeConfig()) -> None:
        super().__init__(arch, pos_embed="mae")
        self.mask_ratio = cfg.mask_ratio  # in (0, 1): MaeConfig validates it
        self.norm_pix = cfg.norm_pix
        decoder_dim = cfg.decoder_dim
        self.decoder_embed = nn.Linear(arch.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed_2d(decoder_dim, self.grid, "mae"), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, cfg.decoder_heads, mlp_ratio=arch.mlp_ratio) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, arch.patch_size * arch.patch_size * 3)
        for m in (self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward_encoder(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches: returns latent (B, 1 + n_keep, C), ids_keep, mask (B, N)."""
        tokens = self.embed(images)  # (B, N, C)
        B, N, C = tokens.shape
        ids_keep, mask = random_masking(N, self.mask_ratio, B, tokens.device)
        visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, C))  # (B, n_keep, C)
        return self.encode(visible), ids_keep, mask

    def forward_decoder(self, latent: Tensor, ids_keep: Tensor, n_tokens: int) -> Tensor:
        """(B, 1 + n_keep, C) -> (B, N, p*p*3) pixel predictions for every patch."""
        x = self.decoder_embed(latent)  # (B, 1 + n_keep, D)
        B, _, D = x.shape
        # under autocast the decoder's output is half precision while the parameter is fp32
        full = self.mask_token.to(x.dtype).expand(B, n_tokens, D).clone()  # (B, N, D)
        full.scatter_(1, ids_keep.unsqueeze(-1).expand(-1, -1, D), x[:, 1:])  # visible back in place
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed  # (B, 1 + N, D)
        x = x.unsqueeze(2)  # (B, L, 1, D) for our NHWC blocks
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x.squeeze(2))
        return self.decoder_pred(x)[:, 1:]  # drop cls: (B, N, p*p*3)

    def loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean over removed patches of the per-patch MSE (target normalized per patch if ``norm_pix``)."""
        target = patchify(images, self.patch_size)
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as the release
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, images: Tensor) -> Tensor:  # type: ignore[override]
        """(B, 3, H, W) normalized images -> scalar loss."""
        latent, ids_keep, mask = self.forward_encoder(images)
        pred = self.forward_decoder(latent, ids_keep, mask.shape[1])
        return self.loss(images, pred, mask)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's tensors only (the ``mae_pretrain_vit_*.pth`` content)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
