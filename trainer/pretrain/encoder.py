"""The pre-training ViT encoder: our detector's blocks and patch embedding under MAE / DeiT / MoCo v3 names.

Parameter names are those of the public releases (timm-0.3/0.4 naming, reference §5.2 of the
architecture notes): ``patch_embed.proj``, ``cls_token`` (1, 1, C), ``pos_embed`` (1, 1 + g*g, C),
``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` and the final ``norm``. Every block
uses global attention and no relative position bias (all three methods pre-train a plain ViT); the
detector's windows and rel-pos tables are added at fine-tuning time. LayerNorm eps is 1e-6 as in the
releases. The position embedding is a fixed 2-D sin-cos table with a zero cls slot, built with either
the MAE formula (He et al. 2021, arXiv 2111.06377, ``util/pos_embed.py``) or the MoCo v3 one (Chen,
Xie, He 2021, arXiv 2104.02057, ``vits.py``); DeiT (Touvron et al. 2020, arXiv 2012.12877) learns it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from vitbench.trainer.models.vit import Block, PatchEmbed
from vitbench.trainer.pretrain.recipes import EncoderConfig

PosEmbedKind = Literal["mae", "mocov3", "learned"]


def _sincos_1d(dim: int, pos: Tensor, temperature: float = 10000.0) -> Tensor:
    """(M,) positions -> (M, dim): ``[sin(pos * w_k), cos(pos * w_k)]`` with w_k = T^(-k / (dim/2))."""
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.reshape(-1, 1).double() * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed_2d(embed_dim: int, grid: int, style: Literal["mae", "mocov3"] = "mae") -> Tensor:
    """Fixed 2-D sin-cos position embedding with a leading zero cls slot: (1, 1 + grid*grid, embed_dim).

    Tokens are in row-major order (row y, column x). ``mae``: the first half of the channels encodes
    the column x, the second half the row y, each as [sin, cos] (MAE ``get_2d_sincos_pos_embed``).
    ``mocov3``: channels are [sin x', cos x', sin y', cos y'] with frequencies k / (dim/4), where the
    flattening of MoCo v3's ``meshgrid(grid_w, grid_h)`` (ij indexing) makes x' the row and y' the
    column (``build_2d_sincos_position_embedding``).
    """
    if embed_dim % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")  # (g, g) each
    if style == "mae":
        emb = torch.cat([_sincos_1d(embed_dim // 2, xs), _sincos_1d(embed_dim // 2, ys)], dim=1)
    elif style == "mocov3":
        pos_dim = embed_dim // 4
        omega = 1.0 / 10000.0 ** (torch.arange(pos_dim, dtype=torch.float64) / pos_dim)
        out_a = ys.reshape(-1, 1).double() * omega[None]  # MoCo's "grid_w" after ij flattening: the row
        out_b = xs.reshape(-1, 1).double() * omega[None]
        emb = torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)
    else:
        raise ValueError(f"unknown sin-cos style {style!r}; expected 'mae' or 'mocov3'")
    cls = torch.zeros(1, embed_dim, dtype=emb.dtype)
    return torch.cat([cls, emb], dim=0).float().unsqueeze(0)  # (1, 1 + g*g, C)


class PretrainViT(nn.Module):
    """Plain ViT encoder on token sequences, with the releases' parameter names.

    Args:
        arch: the ViT's shape, the recipe's ``encoder`` section (validated: ``img_size`` px is a multiple
            of ``patch_size``). Its ``drop_path`` is not read here: each method passes its own (MAE and
            MoCo v3 train without stochastic depth).
        pos_embed: ``mae`` / ``mocov3`` (fixed sin-cos, not trained) or ``learned`` (DeiT, trunc-normal).
    """

    def __init__(
        self,
        arch: EncoderConfig,
        *,
        in_chans: int = 3,
        drop_path: float = 0.0,
        pos_embed: PosEmbedKind = "mae",
    ) -> None:
        super().__init__()
        embed_dim, depth, patch_size = arch.embed_dim, arch.depth, arch.patch_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid = arch.img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        n = self.grid * self.grid
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            table = sincos_pos_embed_2d(embed_dim, self.grid, pos_embed)
            self.pos_embed = nn.Parameter(table, requires_grad=False)  # fixed, but saved like the releases
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, arch.num_heads, mlp_ratio=arch.mlp_ratio, drop_path=dpr[i]) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE's initialization: xavier-uniform linears and patch projection (as a linear), zero biases,
        cls token N(0, 0.02)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, N, C) patch tokens plus position embedding (no cls token yet)."""
        x = self.patch_embed(images)  # (B, h, w, C)
        B, h, w, C = x.shape
        if h != self.grid or w != self.grid:
            raise ValueError(f"expected {self.grid}x{self.grid} patches, got {h}x{w}: wrong image size")
        return x.reshape(B, h * w, C) + self.pos_embed[:, 1:]

    def run_blocks(self, cls: Tensor, tokens: Tensor) -> Tensor:
        """(B, 1, C) cls + (B, N, C) tokens -> (B, 1 + N, C) after the blocks (before the final norm)."""
        x = torch.cat([cls, tokens], dim=1)  # (B, 1 + N, C)
        x = x.unsqueeze(2)  # (B, L, 1, C): our blocks take NHWC maps; a 1-wide map is a sequence
        for blk in self.blocks:
            x = blk(x)
        return x.squeeze(2)

    def encode(self, tokens: Tensor) -> Tensor:
        """(B, N, C) embedded tokens -> (B, 1 + N, C): prepend cls, run the blocks, final norm."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return self.norm(self.run_blocks(cls, tokens))

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1 + N, C) normalized tokens (cls first)."""
        return self.encode(self.embed(images))


def num_patches(img_size: int, patch_size: int) -> int:
    """Patches per image at ``img_size`` px."""
    return (img_size // patch_size) ** 2


def check_square(n: int) -> int:
    """Side of a square token grid of ``n`` tokens; ValueError otherwise."""
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    return g
