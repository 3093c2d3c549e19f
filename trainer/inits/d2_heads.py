"""detectron2 ViTDet Mask R-CNN names -> this project's torchvision Mask R-CNN names.

detectron2 (``configs/common/models/mask_rcnn_vitdet.py``) and torchvision differ in module names and
in one convention: detectron2 puts the background logit **last** and has no background row in the
class-specific box regression / mask predictor, torchvision puts background at index 0 of all three.
Class k of detectron2 (0-based contiguous id) becomes torchvision label k + 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from vitbench.trainer.inits.converted import Converted, Shapes

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^backbone\.net\.", "backbone.net."),
        (r"^backbone\.(simfp_\d\..*)$", r"backbone.neck.\1"),
        (r"^proposal_generator\.rpn_head\.conv\.conv(\d+)\.", r"rpn.head.conv.\1.0."),
        (r"^proposal_generator\.rpn_head\.objectness_logits\.", "rpn.head.cls_logits."),
        (r"^proposal_generator\.rpn_head\.anchor_deltas\.", "rpn.head.bbox_pred."),
        (r"^roi_heads\.box_head\.conv(\d+)\.norm\.", "roi_heads.box_head.{conv}.1."),
        (r"^roi_heads\.box_head\.conv(\d+)\.weight$", "roi_heads.box_head.{conv}.0.weight"),
        (r"^roi_heads\.box_head\.fc1\.", "roi_heads.box_head.{fc}."),
        (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.norm\.", "roi_heads.mask_head.{conv}.1."),
        (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.weight$", "roi_heads.mask_head.{conv}.0.weight"),
        (r"^roi_heads\.mask_head\.deconv\.", "roi_heads.mask_predictor.conv5_mask."),
    )
)
_BG_LAST = {
    "roi_heads.box_predictor.cls_score.weight": "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias": "roi_heads.box_predictor.cls_score.bias",
}
_NO_BG = {
    "roi_heads.box_predictor.bbox_pred.weight": ("roi_heads.box_predictor.bbox_pred.weight", 4),
    "roi_heads.box_predictor.bbox_pred.bias": ("roi_heads.box_predictor.bbox_pred.bias", 4),
    "roi_heads.mask_head.predictor.weight": ("roi_heads.mask_predictor.mask_fcn_logits.weight", 1),
    "roi_heads.mask_head.predictor.bias": ("roi_heads.mask_predictor.mask_fcn_logits.bias", 1),
}


def _rename(key: str, target: Shapes) -> str | None:
    num_box_convs = sum(1 for k in target if re.match(r"^roi_heads\.box_head\.\d+\.0\.weight$", k))
    for pattern, repl in _RENAMES:
        m = pattern.match(key)
        if not m:
            continue
        if "{conv}" in repl:
            repl = repl.replace("{conv}", str(int(m.group(1)) - 1))  # conv1 -> index 0
            return repl + key[m.end() :]
        if "{fc}" in repl:
            # torchvision: [conv blocks..., Flatten, Linear] -> the Linear sits after the Flatten
            return repl.replace("{fc}", str(num_box_convs + 1)) + key[m.end() :]
        return pattern.sub(repl, key, count=1)
    return None


def map_detectron2(state: Mapping[str, Tensor], target: Shapes) -> Converted:
    """Map a ViTDet zoo ``model`` dict onto this detector; unknown keys keep their names (unexpected)."""
    out = Converted()
    for key, value in state.items():
        if key in _BG_LAST:
            # (K + 1, ...) with background last -> background first
            out.tensors[_BG_LAST[key]] = torch.cat([value[-1:], value[:-1]])
            continue
        if key in _NO_BG:
            dst, per_class = _NO_BG[key]
            out.tensors[dst] = torch.cat(
                [torch.zeros_like(value[:per_class]), value]
            )  # zero background row(s)
            continue
        renamed = _rename(key, target)
        out.tensors[renamed if renamed is not None else key] = value
    out.notes.append("detectron2 class k -> label k + 1; background moved to index 0 (zero box/mask rows)")
    return out
