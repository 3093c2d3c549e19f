"""MIMDet backbone (Fang et al., arXiv 2204.02964; github.com/hustvl/MIMDet): conv stem, sampled-token
ViT, MAE decoder.

- ``stem``: four 3x3 stride-2 convs (no bias) each followed by GroupNorm(1 group) and GELU, widths
  C/8, C/4, C/2, C, then a 1x1 conv to C. Its stride-4 (C/4) and stride-8 (C/2) maps feed the FPN; the
  stride-16 map becomes the ViT's tokens (the ViT is stage 3). Randomly initialized.
- ``net``: MAE encoder blocks (global attention, MAE parameter names ``blocks.N.*`` and ``norm``) with a
  fixed 2-D sin-cos position embedding. In training only ``int(L * sample_ratio)`` randomly chosen tokens
  enter it; at inference all tokens do.
- ``decoder_embed`` + ``decoder_blocks`` (the first ``decoder_depth`` MAE decoder blocks) +
  ``decoder_norm``: the encoded tokens are projected to the decoder width, the dropped positions are
  filled with the stride-16 stem features projected by ``conv_feat_proj`` (MIMDet v2), and the decoder
  produces a dense stride-16 map; a 2x2 max-pool of it gives stride 32.
- ``fpn``: the standard FPN over (C/4, C/2, D, D) at strides 4, 8, 16, 32 -> p2–p6.
Sampling is uniform over all tokens (the batch canvas is padded before the backbone, and padded tokens
are not known here; MIMDet drops padding tokens first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vitbench.trainer.models.necks import FPN
from vitbench.trainer.recipes import BackboneConfig, NeckConfig, Recipe

__all__ = ["ConvStem", "MIMDetBackbone", "build_mimdet_backbone", "sincos_pos_embed_2d"]


def sincos_pos_embed_2d(dim: int, h: int, w: int, device: torch.device | None = None) -> Tensor:
    """MAE's fixed 2-D sin-cos embedding for an ``h x w`` grid: (1, h*w, dim), row-major tokens.

    As in MAE's ``get_2d_sincos_pos_embed``: the first dim/2 channels encode the column (x), the
    last dim/2 the row (y); each half is [sin(pos * omega), cos(pos * omega)] with
    omega_k = 1 / 10000^(k / (dim/4)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )

    def one_d(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega[None]  # (h*w, dim/4)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (h*w, dim/2)

    return torch.cat([one_d(xs), one_d(ys)], dim=1).float().unsqueeze(0)


class ConvStem(nn.Module):
    """(B, 3, H, W) -> [(B, C/4, H/4, W/4), (B, C/2, H/8, W/8), (B, C, H/16, W/16)]."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"conv stem widths C/8..C need embed_dim divisible by 8, got {embed_dim}")
        widths = [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        stages: list[nn.Module] = []
        prev = in_chans
        for w in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, w, kernel_size=3, stride=2, padding=1, bias=False),
                    nn.GroupNorm(1, w, eps=1e-6),
                    nn.GELU(),
                )
            )
            prev = w
        self.stages = nn.ModuleList(stages)
        self.proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in (1, 2):  # strides 4 and 8
                outs.append(x)
        outs.append(self.proj(x))  # stride 16
        return outs


class _Encoder(nn.Module):
    """MAE encoder blocks + final norm (names ``blocks.N.*``, ``norm.*`` as in the MAE checkpoint)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear in depth (meta-safe)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=_LayerNorm)
            for i in range(depth)
        )
        self.norm = _LayerNorm(dim)


class _LayerNorm(nn.LayerNorm):
    """LayerNorm with MAE's eps 1e-6 (timm passes ``device``/``dtype`` keywords)."""

    def __init__(self, dim: int, **kwargs: Any) -> None:
        kwargs.pop("eps", None)
        super().__init__(dim, eps=1e-6, **kwargs)


class MIMDetBackbone(nn.Module):
    """MIMDet: (B, 3, H, W) -> OrderedDict p2–p6 (strides 4–64), ``out_channels`` each.

    H and W must be multiples of 16. Built from the recipe's ``backbone`` section (``embed_dim``,
    ``depth``, ``num_heads``, ``mlp_ratio``, ``drop_path``, ``act_checkpoint``, ``decoder_*`` and
    ``sample_ratio`` (0 < r <= 1), the fraction of stride-16 tokens the encoder sees in training;
    evaluation always uses all tokens) and its ``neck`` (FPN ``out_channels`` and ``norm``).
    """

    def __init__(self, bb: BackboneConfig, neck: NeckConfig) -> None:
        super().__init__()
        embed_dim, decoder_dim = bb.embed_dim, bb.decoder_dim  # sample_ratio in (0, 1]: validated
        self.embed_dim, self.decoder_dim = embed_dim, decoder_dim
        self.sample_ratio = bb.sample_ratio
        self.act_checkpoint = bb.act_checkpoint
        self.stem = ConvStem(embed_dim)
        self.net = _Encoder(embed_dim, bb.depth, bb.num_heads, bb.mlp_ratio, bb.drop_path)
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.conv_feat_proj = nn.Linear(embed_dim, decoder_dim)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, bb.decoder_heads, bb.mlp_ratio, qkv_bias=True, norm_layer=_LayerNorm)
            for _ in range(bb.decoder_depth)
        )
        self.decoder_norm = _LayerNorm(decoder_dim)
        self.fpn = FPN(
            [embed_dim // 4, embed_dim // 2, decoder_dim, decoder_dim], neck.out_channels, neck.norm
        )
        self.out_channels = neck.out_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # MAE's init for Linear layers
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")  # LeCun normal
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _run(self, blocks: nn.ModuleList, x: Tensor) -> Tensor:
        for blk in blocks:
            if self.act_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def num_kept(self, num_tokens: int) -> int:
        """Tokens the encoder sees for ``num_tokens`` positions (all of them in eval mode)."""
        if not self.training or self.sample_ratio >= 1:
            return num_tokens
        return max(1, int(num_tokens * self.sample_ratio))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four maps before the FPN: strides 4, 8, 16, 32 with C/4, C/2, D, D channels."""
        c2, c3, c16 = self.stem(x)
        B, C, h, w = c16.shape
        tokens = c16.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, L, C)
        L = h * w
        enc = tokens + sincos_pos_embed_2d(C, h, w, tokens.device).to(tokens.dtype)
        keep = self.num_kept(L)
        if keep < L:
            ids = torch.rand(B, L, device=x.device).argsort(dim=1)  # random permutation per image
            ids_keep = ids[:, :keep]  # (B, keep)
            enc = enc.gather(1, ids_keep[..., None].expand(-1, -1, C))  # (B, keep, C)
        enc = self.net.norm(self._run(self.net.blocks, enc))
        dec_kept = self.decoder_embed(enc)  # (B, keep, D)
        if keep < L:
            # dropped positions take the projected stem features; kept ones the encoder output
            dec = self.conv_feat_proj(tokens)  # (B, L, D)
            dec = dec.scatter(1, ids_keep[..., None].expand(-1, -1, self.decoder_dim), dec_kept)
        else:
            dec = dec_kept
        dec = dec + sincos_pos_embed_2d(self.decoder_dim, h, w, dec.device).to(dec.dtype)
        dec = self.decoder_norm(self._run(self.decoder_blocks, dec))
        c4 = dec.transpose(1, 2).reshape(B, self.decoder_dim, h, w)  # (B, L, D) -> (B, D, h, w)
        c5 = F.max_pool2d(c4, kernel_size=2, stride=2)
        return [c2, c3, c4, c5]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x``: (B, 3, H, W), H and W multiples of 16 -> p2–p6."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"MIMDet input sides must be multiples of 16, got {tuple(x.shape[-2:])}")
        return self.fpn(self.forward_features(x))


def build_mimdet_backbone(recipe: Recipe) -> MIMDetBackbone:
    """The ``mimdet`` backbone of ``recipe`` (``backbone.*`` incl. ``sample_ratio``, ``decoder_*``;
    ``neck.out_channels``, ``neck.norm``)."""
    return MIMDetBackbone(recipe.backbone, recipe.neck)
