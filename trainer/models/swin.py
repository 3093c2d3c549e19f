"""Swin-T backbone for the MoBY initialization: torchvision's Swin stages + per-stage LayerNorm + FPN.

The stages are torchvision's ``SwinTransformer.features`` (patch embed, 4 stages of shifted-window
blocks, patch merging in between), kept at ``body`` so that a MoBY/official-Swin checkpoint maps onto
``backbone.body.*`` (see ``trainer/inits/converters.py::convert_moby``). Like mmdetection's Swin, each
stage output (strides 4, 8, 16, 32) gets its own LayerNorm (``out_norms``, fresh) before the FPN.
Windows are padded to multiples of the window size, so any input side works.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformer

from vitbench.trainer.models.necks import FPN
from vitbench.trainer.recipes import BackboneConfig, NeckConfig, Recipe

__all__ = ["SwinBackbone", "build_swin_backbone"]


class SwinBackbone(nn.Module):
    """(B, 3, H, W) -> OrderedDict p2–p6 at strides 4–64 with ``out_channels`` channels each.

    Built from the recipe's ``backbone`` section (``embed_dim``: stage-1 width C, stages are C, 2C, 4C,
    8C; ``stage_depths`` / ``stage_heads``: blocks and heads per stage; ``window_size``: attention window
    side in tokens; ``patch_size``: patch side in px (4); ``mlp_ratio``; ``drop_path``) and its ``neck``
    (FPN ``out_channels`` and ``norm``).
    """

    def __init__(self, bb: BackboneConfig, neck: NeckConfig) -> None:
        super().__init__()
        depths, num_heads = bb.stage_depths, bb.stage_heads
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages, got depths {list(depths)} and heads {list(num_heads)}")
        swin = SwinTransformer(
            patch_size=[bb.patch_size, bb.patch_size],
            embed_dim=bb.embed_dim,
            depths=list(depths),
            num_heads=list(num_heads),
            window_size=[bb.window_size, bb.window_size],
            mlp_ratio=bb.mlp_ratio,
            stochastic_depth_prob=bb.drop_path,
        )
        self.body = swin.features  # 0: patch embed, 1/3/5/7: stages, 2/4/6: patch merging
        widths = [bb.embed_dim * 2**i for i in range(4)]
        self.out_norms = nn.ModuleList(nn.LayerNorm(w) for w in widths)
        self.fpn = FPN(widths, neck.out_channels, neck.norm)
        self.out_channels = neck.out_channels

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


def build_swin_backbone(recipe: Recipe) -> SwinBackbone:
    """The ``swin`` backbone of ``recipe`` (``backbone.embed_dim``, ``stage_depths``, ``stage_heads``,
    ``window_size``, ``patch_size``, ``mlp_ratio``, ``drop_path``; ``neck.out_channels``, ``neck.norm``)."""
    return SwinBackbone(recipe.backbone, recipe.neck)
