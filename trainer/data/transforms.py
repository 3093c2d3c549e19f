"""Training and evaluation transforms on ``torchvision.transforms.v2`` tv_tensors.

Large-scale jitter (LSJ, ViTDet's ``coco_loader_lsj``): horizontal flip, resize by a factor drawn
uniformly from ``scale_range`` of the output size keeping the aspect ratio (``v2.ScaleJitter``), random
crop to at most ``size``×``size``, pad bottom/right to exactly ``size``×``size`` with the mean colour, then
drop boxes that became empty. The padded square reaches the model at its native size, so the detector's
own resize (longest side → ``size``) is the identity in training. Evaluation leaves images untouched:
the detector resizes the longest side to ``size`` and maps predictions back to the original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size


class FixedSizeCrop(v2.Transform):
    """Random crop to at most ``size``×``size`` (uniform offset), then pad bottom/right to exactly that.

    Images are padded with ``fill`` (0–255 per channel), masks with 0; boxes are clipped by the crop.
    """

    def __init__(self, size: int, fill: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.fill = [float(v) for v in fill]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        crop_h, crop_w = min(h, self.size), min(w, self.size)
        top = int(torch.randint(0, h - crop_h + 1, (1,)).item())
        left = int(torch.randint(0, w - crop_w + 1, (1,)).item())
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask, tv_tensors.BoundingBoxes)):
            return inpt
        out = F.crop(inpt, params["top"], params["left"], params["height"], params["width"])
        pad = [0, 0, self.size - params["width"], self.size - params["height"]]  # left, top, right, bottom
        if pad[2] == 0 and pad[3] == 0:
            return out
        fill: Any = self.fill if isinstance(inpt, tv_tensors.Image) else 0
        return F.pad(out, pad, fill=fill)


def build_train_transform(
    size: int,
    scale_range: tuple[float, float] = (0.1, 2.0),
    pad_fill: Sequence[float] = (123.675, 116.28, 103.53),
    hflip_prob: float = 0.5,
) -> v2.Compose:
    """LSJ pipeline producing ``size``×``size`` uint8 images with boxes (XYXY), labels and masks."""
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    steps: list[v2.Transform] = []
    if hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(hflip_prob))
    steps += [
        v2.ScaleJitter(target_size=(size, size), scale_range=scale_range, antialias=True),
        FixedSizeCrop(size, fill=[round(v) for v in pad_fill]),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_getter),
    ]
    return v2.Compose(steps)


def _labels_getter(inputs: Any) -> tuple[torch.Tensor, ...]:
    """Tell ``SanitizeBoundingBoxes`` which per-box tensors to filter with the boxes (labels, masks, ...)."""
    target = inputs[1]
    keys = ("labels", "masks", "area", "iscrowd")
    return tuple(target[k] for k in keys if k in target)


def build_eval_transform() -> v2.Transform:
    """Identity on the pixels: the detector resizes the longest side and maps predictions back."""
    return v2.Identity()
