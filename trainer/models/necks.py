"""Feature pyramids that turn backbone maps into ``p2``–``p6`` (strides 4, 8, 16, 32, 64).

- :class:`FPN`: the standard FPN (lateral 1x1 + top-down + 3x3 output, ``LastLevelMaxPool`` for p6)
  over four maps at strides 4–32, from torchvision's ``FeaturePyramidNetwork``; reused by the MIMDet
  and Swin backbones.
- :class:`MultiScaleFPN`: the study's four resolution modules on ViT taps after blocks d/4, d/2, 3d/4,
  d (4x up, 2x up, identity, 2x down; all keep the ViT width), then :class:`FPN`.
- :class:`SimpleFeaturePyramid`: ViTDet's pyramid from the last ViT map only, with detectron2's
  module names (``simfp_2`` … ``simfp_5``) so ViTDet checkpoints map one to one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

__all__ = ["FPN", "ConvNorm", "LayerNorm2d", "MultiScaleFPN", "SimpleFeaturePyramid", "make_norm"]

NormKind = Literal["bn", "syncbn", "ln", "gn"]
LEVELS = ("p2", "p3", "p4", "p5", "p6")
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of NCHW maps (detectron2 ``LayerNorm``, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels  # a Python int, so ONNX tracing sees a constant shape
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, H, W, C) -> normalize C -> (B, C, H, W)
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def group_count(channels: int, preferred: int = 32) -> int:
    """GroupNorm groups: ``preferred`` (32) when it divides ``channels``, else their gcd."""
    return math.gcd(preferred, channels)


def make_norm(kind: NormKind) -> Callable[[int], nn.Module]:
    """A ``norm_layer(channels)`` factory for torchvision parts.

    ``bn`` and ``syncbn`` both build ``BatchNorm2d``; the engine converts ``syncbn`` models with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` when training is distributed.
    """
    if kind in ("bn", "syncbn"):
        return nn.BatchNorm2d
    if kind == "ln":
        return LayerNorm2d
    if kind == "gn":
        return lambda c: nn.GroupNorm(group_count(c), c)
    raise ValueError(f"unknown norm {kind!r}: expected one of 'bn', 'syncbn', 'ln', 'gn'")


class ConvNorm(nn.Conv2d):
    """Conv2d then an optional ``norm`` (detectron2 ``layers.Conv2d`` naming: ``weight``, ``norm.*``)."""

    def __init__(self, *args: int, norm: nn.Module | None = None, **kwargs: int | bool) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


class FPN(nn.Module):
    """Standard FPN over four maps at strides 4, 8, 16, 32 -> ``OrderedDict`` p2–p6 (``out_channels`` each).

    Lateral and output convs carry the norm (no bias then), as detectron2's ``FPN(norm=...)``;
    p6 = ``max_pool2d(p5, kernel 1, stride 2)``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, norm: NormKind | None) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"FPN takes 4 maps (strides 4-32), got in_channels {list(in_channels)}")
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork(
            list(in_channels),
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=make_norm(norm) if norm is not None else None,
        )

    def forward(self, feats: Sequence[Tensor]) -> OrderedDict[str, Tensor]:
        """``feats``: four (B, C_i, H/s, W/s) maps for s = 4, 8, 16, 32."""
        if len(feats) != 4:
            raise ValueError(f"FPN expects 4 maps, got {len(feats)}")
        out = self.fpn(OrderedDict(zip(LEVELS[:4], feats, strict=True)))
        return OrderedDict(zip(LEVELS, out.values(), strict=True))  # 'pool' -> 'p6'


class MultiScaleFPN(nn.Module):
    """The study's neck: resolution modules on four ViT taps (stride 16) then a normed :class:`FPN`.

    ``adapters.0``: ConvT 2x2/2 -> GroupNorm(32) -> GELU -> ConvT 2x2/2 (stride 4);
    ``adapters.1``: ConvT 2x2/2 (stride 8); ``adapters.2``: identity (16);
    ``adapters.3``: max-pool 2x2/2 (stride 32).
    Every module keeps the ViT width ``embed_dim``.
    """

    def __init__(self, embed_dim: int, out_channels: int, norm: NormKind) -> None:
        super().__init__()
        C = embed_dim
        self.out_channels = out_channels
        self.adapters = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(C, C, kernel_size=2, stride=2),
                    nn.GroupNorm(group_count(C), C),
                    nn.GELU(),
                    nn.ConvTranspose2d(C, C, kernel_size=2, stride=2),
                ),
                nn.ConvTranspose2d(C, C, kernel_size=2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
        )
        self.fpn = FPN([C] * 4, out_channels, norm)

    def forward(self, feats: Sequence[Tensor]) -> OrderedDict[str, Tensor]:
        """``feats``: the four (B, C, H/16, W/16) taps after blocks d/4, d/2, 3d/4, d."""
        if len(feats) != 4:
            raise ValueError(f"MultiScaleFPN expects 4 ViT taps, got {len(feats)}")
        return self.fpn([adapter(f) for adapter, f in zip(self.adapters, feats, strict=True)])


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple pyramid from the last (B, C, H/16, W/16) ViT map -> p2–p6.

    ``simfp_2``: ConvT(C->C/2) -> norm -> GELU -> ConvT(C/2->C/4); ``simfp_3``: ConvT(C->C/2);
    ``simfp_4``: identity; ``simfp_5``: max-pool 2x2/2; each then 1x1 conv + norm and 3x3 conv + norm
    to ``out_channels`` (no conv bias when normed). p6 = max-pool(p5, kernel 1, stride 2).
    """

    def __init__(self, embed_dim: int, out_channels: int, norm: NormKind) -> None:
        super().__init__()
        C = embed_dim
        self.out_channels = out_channels
        norm_layer = make_norm(norm)
        for stage, scale in ((2, 4.0), (3, 2.0), (4, 1.0), (5, 0.5)):
            layers: list[nn.Module]
            dim = C
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(C, C // 2, kernel_size=2, stride=2),
                    norm_layer(C // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(C // 2, C // 4, kernel_size=2, stride=2),
                ]
                dim = C // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(C, C // 2, kernel_size=2, stride=2)]
                dim = C // 2
            elif scale == 1.0:
                layers = []
            else:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            layers += [
                ConvNorm(dim, out_channels, kernel_size=1, bias=False, norm=norm_layer(out_channels)),
                ConvNorm(
                    out_channels,
                    out_channels,
                    kernel_size=3,
                    padding=1,
                    bias=False,
                    norm=norm_layer(out_channels),
                ),
            ]
            self.add_module(f"simfp_{stage}", nn.Sequential(*layers))

    def forward(self, feats: Sequence[Tensor]) -> OrderedDict[str, Tensor]:
        """``feats``: a one-element list with the last ViT map (B, C, H/16, W/16)."""
        x = feats[-1]
        out: OrderedDict[str, Tensor] = OrderedDict()
        for stage in (2, 3, 4, 5):
            out[f"p{stage}"] = getattr(self, f"simfp_{stage}")(x)
        out["p6"] = F.max_pool2d(out["p5"], kernel_size=1, stride=2)
        return out
