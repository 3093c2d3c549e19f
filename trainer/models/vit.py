"""Plain ViT backbone for detection (the study / ViTDet), with upstream parameter names.

Names follow the MAE / DeiT / MoCo v3 checkpoints and detectron2's ViT: ``patch_embed.proj``,
``pos_embed`` (stored at the pre-training shape ``(1, 1 + (P/16)^2, C)`` including the cls slot and
resized on every forward like detectron2's ``get_abs_pos``), ``blocks.N.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}``; BEiT options ``blocks.N.attn.{q_bias, v_bias}``, ``blocks.N.gamma_{1,2}``;
rel-pos ``rel_pos_window`` / ``rel_pos_global`` (shared tables) or ``blocks.N.attn.rel_pos_{h,w}``.
There is no cls token and no final norm (as in detectron2's ViT).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vitbench.trainer.models.attention import (
    Attention,
    RelativePositionBias,
    RelPosKind,
    static_hw,
    window_partition,
    window_unpartition,
)

__all__ = ["Block", "PatchEmbed", "ViT", "get_abs_pos", "resize_pos_grid"]


def resize_pos_grid(tokens: Tensor, hw: tuple[int, int]) -> Tensor:
    """A square grid of position embeddings ``(1, S*S, C)`` resized to ``(1, H, W, C)``.

    Bicubic, align_corners=False, no antialias, computed in float32 and returned in the input's dtype:
    detectron2's ``get_abs_pos`` (detectron2/modeling/backbone/utils.py). The one resize of absolute
    position embeddings: the forward pass and the checkpoint converters use it.
    """
    size = math.isqrt(tokens.shape[1])
    if size * size != tokens.shape[1]:
        raise ValueError(f"pos_embed has {tokens.shape[1]} positions, not a square grid")
    grid = tokens.reshape(1, size, size, -1)  # (1, S, S, C)
    h, w = hw
    if size == h and size == w:
        return grid
    # (1, S, S, C) -> (1, C, S, S) -> (1, C, H, W) -> (1, H, W, C)
    src = grid.permute(0, 3, 1, 2).float()
    resized = F.interpolate(src, size=(h, w), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).to(tokens.dtype)


def get_abs_pos(abs_pos: Tensor, has_cls_token: bool, hw: tuple[int, int]) -> Tensor:
    """Absolute position embeddings for an ``hw`` token grid (detectron2 ``get_abs_pos``).

    ``abs_pos``: (1, [1 +] S*S, C) on a square pre-training grid. The cls slot is dropped and the grid
    is resized bicubically (align_corners=False, no antialias) when S differs. Returns (1, H, W, C).
    """
    return resize_pos_grid(abs_pos[:, 1:] if has_cls_token else abs_pos, hw)


class PatchEmbed(nn.Module):
    """Non-overlapping patchify conv: (B, 3, H, W) -> (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)


class Block(nn.Module):
    """Pre-norm transformer block on NHWC maps; windowed when ``window_size > 0`` (zero padding, no mask)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qv_bias: bool = False,
        drop_path: float = 0.0,
        window_size: int = 0,
        rel_pos: RelPosKind = "none",
        rel_pos_size: int | None = None,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim, num_heads, qkv_bias=True, qv_bias=qv_bias, rel_pos=rel_pos, input_size=rel_pos_size
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.gamma_1: nn.Parameter | None = None
        self.gamma_2: nn.Parameter | None = None
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor, attn_bias: Tensor | None = None) -> Tensor:
        """``x``: (B, H, W, C); ``attn_bias``: shared rel-pos bias for this block's attention extent."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = static_hw(x)
            x, pad_hw = window_partition(x, self.window_size)
            x = self.attn(x, attn_bias)
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        else:
            x = self.attn(x, attn_bias)
        if self.gamma_1 is not None:
            x = self.gamma_1 * x
        x = shortcut + self.drop_path(x)
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        return x + self.drop_path(y)


class ViT(nn.Module):
    """Plain ViT backbone with windowed + global attention; returns NCHW maps after ``out_indices``.

    Args:
        img_size: detection input side in px (sets the global rel-pos size G = img_size / patch_size).
        window_size: window side in tokens; blocks not in ``global_blocks`` are windowed (0: all global).
        rel_pos: ``none``, ``shared_bias`` (study) or ``decomposed`` (ViTDet).
        out_indices: block indexes (0-based) whose outputs are returned, each (B, C, H/p, W/p).
        init_style: ``vitdet`` (trunc-normal 0.02) or ``beit`` (trunc-normal 0.02 cut at ±std, then
            block i's ``attn.proj`` and ``mlp.fc2`` weights divided by sqrt(2 (i+1))).
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        window_size: int = 14,
        global_blocks: Sequence[int] = (2, 5, 8, 11),
        rel_pos: RelPosKind = "none",
        layer_scale: float | None = None,
        qv_bias: bool = False,
        drop_path: float = 0.0,
        act_checkpoint: bool = False,
        pretrain_img_size: int = 224,
        out_indices: Sequence[int] = (11,),
        init_style: Literal["beit", "vitdet"] = "vitdet",
    ) -> None:
        super().__init__()
        if not out_indices or any(not 0 <= i < depth for i in out_indices):
            raise ValueError(f"out_indices {list(out_indices)} must be block indexes in [0, {depth - 1}]")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.global_blocks = tuple(sorted(global_blocks))
        self.rel_pos = rel_pos
        self.act_checkpoint = act_checkpoint
        self.out_indices = tuple(out_indices)
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        num_pretrain = (pretrain_img_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pretrain + 1, embed_dim))  # +1: the cls slot
        windowed = [i for i in range(depth) if window_size > 0 and i not in self.global_blocks]
        self.rel_pos_window: RelativePositionBias | None = None
        self.rel_pos_global: RelativePositionBias | None = None
        if rel_pos == "shared_bias":
            if windowed:
                self.rel_pos_window = RelativePositionBias(window_size, num_heads)
            if len(windowed) < depth:
                self.rel_pos_global = RelativePositionBias(grid, num_heads)
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth: linear in depth
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qv_bias=qv_bias,
                drop_path=dpr[i],
                window_size=window_size if i in windowed else 0,
                rel_pos="decomposed" if rel_pos == "decomposed" else "none",
                rel_pos_size=window_size if i in windowed else grid,
                layer_scale=layer_scale,
            )
            for i in range(depth)
        )
        self._init_weights(init_style)

    def _init_weights(self, style: Literal["beit", "vitdet"]) -> None:
        std = 0.02
        cut = (-std, std) if style == "beit" else (-2.0, 2.0)
        nn.init.trunc_normal_(self.pos_embed, std=std, a=cut[0], b=cut[1])
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std, a=cut[0], b=cut[1])
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if style == "beit":
            with torch.no_grad():
                for i, blk in enumerate(self.blocks):
                    assert isinstance(blk, Block)
                    blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                    blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x``: (B, 3, H, W) normalized images, H and W multiples of the patch size.

        Returns one (B, C, H/p, W/p) map per entry of ``out_indices``, in that order.
        """
        x = self.patch_embed(x)  # (B, h, w, C)
        hw = static_hw(x)
        x = x + get_abs_pos(self.pos_embed, True, hw)
        bias_window = (
            self.rel_pos_window((self.window_size, self.window_size)) if self.rel_pos_window else None
        )
        bias_global = self.rel_pos_global(hw) if self.rel_pos_global else None
        if torch.is_autocast_enabled(x.device.type):
            # Cast the shared (1, nH, N, N) tables once, not in every block that reads them.
            dtype = torch.get_autocast_dtype(x.device.type)
            bias_window = bias_window.to(dtype) if bias_window is not None else None
            bias_global = bias_global.to(dtype) if bias_global is not None else None
        outs: dict[int, Tensor] = {}
        last = max(self.out_indices)
        for i, blk in enumerate(self.blocks):
            assert isinstance(blk, Block)
            bias = bias_window if blk.window_size > 0 else bias_global
            if self.act_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, bias, use_reentrant=False)
            else:
                x = blk(x, bias)
            if i in self.out_indices:
                outs[i] = x.permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)
            if i == last:
                break
        return [outs[i] for i in self.out_indices]
