"""Swin-T backbone for the MoBY initialization: torchvision's Swin stages + per-stage LayerNorm + FPN.

The stages are torchvision's ``SwinTransformer.features`` (patch embed, 4 stages of shifted-window
blocks, patch merging in between), kept at ``body`` so that a MoBY/official-Swin checkpoint maps onto
``backbone.body.*`` (see ``trainer/inits/converters.py::convert_moby``). Like mmdetection's Swin, each
stage output (strides 4, 8, 16, 32) gets its own LayerNorm (``out_norms``, fresh) before the FPN.
Windows are padded to multiples of the window size, so any input side works.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformer

from vitbench.trainer.models.necks import FPN

__all__ = ["SwinBackbone", "build_swin_backbone"]


class SwinBackbone(nn.Module):
    """(B, 3, H, W) -> OrderedDict p2–p6 at strides 4–64 with ``out_channels`` channels each.

    Args:
        embed_dim: stage-1 width C (stages are C, 2C, 4C, 8C).
        depths / num_heads: blocks and heads per stage.
        window_size: attention window side in tokens; patch_size: patch side in px (4).
    """

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.2,
        out_channels: int = 256,
        norm: Any = "syncbn",
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages, got depths {list(depths)} and heads {list(num_heads)}")
        swin = SwinTransformer(
            patch_size=[patch_size, patch_size],
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(num_heads),
            window_size=[window_size, window_size],
            mlp_ratio=mlp_ratio,
            stochastic_depth_prob=drop_path,
        )
        self.body = swin.features  # 0: patch embed, 1/3/5/7: stages, 2/4/6: patch merging
        widths = [embed_dim * 2**i for i in range(4)]
        self.out_norms = nn.ModuleList(nn.LayerNorm(w) for w in widths)
        self.fpn = FPN(widths, out_channels, norm)
        self.out_channels = out_channels

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The four normalized stage outputs, each (B, C_i, H/s, W/s) for s = 4, 8, 16, 32."""
        outs: list[Tensor] = []
        for i, layer in enumerate(self.body):
            x = layer(x)  # NHWC throughout torchvision's Swin
            if i % 2 == 1:
                norm = self.out_norms[i // 2]
                outs.append(norm(x).permute(0, 3, 1, 2).contiguous())  # (B, h, w, C) -> (B, C, h, w)
        return outs

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x``: (B, 3, H, W) normalized images; returns p2–p6."""
        return self.fpn(self.forward_stages(x))


def build_swin_backbone(recipe: Any) -> SwinBackbone:
    """The ``swin`` backbone of ``recipe`` (``backbone.embed_dim``, ``stage_depths``, ``stage_heads``,
    ``window_size``, ``patch_size``, ``drop_path``; ``neck.out_channels``, ``neck.norm``)."""
    bb, neck = recipe.backbone, recipe.neck
    return SwinBackbone(
        embed_dim=bb.embed_dim,
        depths=tuple(getattr(bb, "stage_depths", (2, 2, 6, 2))),
        num_heads=tuple(getattr(bb, "stage_heads", (3, 6, 12, 24))),
        window_size=bb.window_size,
        patch_size=bb.patch_size,
        mlp_ratio=bb.mlp_ratio,
        drop_path=bb.drop_path,
        out_channels=neck.out_channels,
        norm=neck.norm,
    )
