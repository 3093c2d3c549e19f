"""torchvision's Mask R-CNN inference written over a whole batch, so that one traced graph serves any B.

torchvision's ``RegionProposalNetwork`` and ``RoIHeads`` loop over the images of a batch in Python,
so a traced graph is fixed to the traced batch size, and their ``batched_nms`` traces to one NMS over
every (proposal, class) pair with coordinate offsets (80 000 boxes at 80 classes and score threshold
0), which dominated the exported graph's run time. Here every step works on padded batch tensors
with validity masks, and NMS runs per (image, level) in the RPN and per (image, class) in the box
head through :class:`GroupedNMS`, which exports to ONNX ``NonMaxSuppression`` with the groups as its
batch/class dimensions (ONNX Runtime runs one small NMS per group). Detections are then compacted:
the outputs concatenate the images' detections with a ``batch_index`` per detection.

The arithmetic is torchvision 0.29's (``rpn.filter_proposals``, ``roi_heads.postprocess_detections``,
``poolers.MultiScaleRoIAlign``, ``roi_heads.maskrcnn_inference``): same top-k per level, clipping,
small-box removal, thresholds (``>=`` for the RPN score, ``>`` for the detection score), NMS IoU
rule (suppress IoU > threshold), score order and ``detections_per_img`` cut.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align
from torchvision.ops.poolers import MultiScaleRoIAlign, _setup_scales

#: Score given to entries that must not survive NMS (real scores are probabilities >= 0).
SENTINEL = -1.0
_SENTINEL_THRESHOLD = -0.5
_MAX_OUTPUT_PER_CLASS = 1_000_000


class GroupedNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` semantics: boxes [G, N, 4], scores [G, K, N] → selected [S, 3].

    For every group g and class k independently, greedy NMS over the boxes of g whose score for k is
    above ``SENTINEL`` (IoU > ``iou_threshold`` suppresses); rows are ``(g, k, box index)``, ordered by
    group, then class, then decreasing score. Eager runs torchvision's ``nms`` per (g, k); the ONNX
    export is one ``NonMaxSuppression`` node.
    """

    @staticmethod
    def forward(ctx: object, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:  # type: ignore[override]
        rows: list[Tensor] = []
        for g in range(scores.shape[0]):
            for k in range(scores.shape[1]):
                candidates = torch.where(scores[g, k] > _SENTINEL_THRESHOLD)[0]
                keep = candidates[box_ops.nms(boxes[g, candidates], scores[g, k, candidates], iou_threshold)]
                fill = torch.full_like(keep, g), torch.full_like(keep, k)
                rows.append(torch.stack([fill[0], fill[1], keep], dim=1))
        if not rows:
            return boxes.new_zeros((0, 3), dtype=torch.int64)
        return torch.cat(rows)

    @staticmethod
    def symbolic(g: object, boxes: object, scores: object, iou_threshold: float) -> object:
        op = g.op  # type: ignore[attr-defined]
        max_out = op("Constant", value_t=torch.tensor([_MAX_OUTPUT_PER_CLASS], dtype=torch.int64))
        iou = op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        floor = op("Constant", value_t=torch.tensor([_SENTINEL_THRESHOLD], dtype=torch.float32))
        return op("NonMaxSuppression", boxes, scores, max_out, iou, floor)


def grouped_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """See :class:`GroupedNMS`; ``scores`` [G, K, N] uses ``SENTINEL`` for entries left out."""
    out = GroupedNMS.apply(boxes, scores, float(iou_threshold))
    assert isinstance(out, Tensor)
    return out


def _flatten_level(t: Tensor, c: int) -> Tensor:
    """RPN head output (B, A*c, H, W) → (B, H*W*A, c), the order of torchvision's ``permute_and_flatten``."""
    t = t.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, A*c)
    return t.unflatten(2, (-1, c)).flatten(1, 2)  # (B, H*W*A, c)


def _gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """``values`` (B, N, ...) and ``index`` (B, K) → (B, K, ...): per-image row selection."""
    expanded = index
    for _ in range(values.dim() - 2):
        expanded = expanded.unsqueeze(-1)
    expanded = expanded.expand(-1, -1, *values.shape[2:])  # batch and K stay symbolic
    return torch.gather(values, 1, expanded)


def _keep_scores(selected: Tensor, scores: Tensor) -> Tensor:
    """Scores (G, K, N) with everything NMS did not select set to ``SENTINEL``."""
    flat = (selected[:, 0] * scores.shape[1] + selected[:, 1]) * scores.shape[2] + selected[:, 2]
    kept = (scores * 0.0 + SENTINEL).flatten()  # not full_like: the tracer would fold it to a fixed shape
    kept = kept.index_put((flat,), scores.flatten()[flat])
    return kept.view_as(scores)


def multiscale_roi_align(
    pooler: MultiScaleRoIAlign, features: dict[str, Tensor], rois: Tensor, size: int
) -> Tensor:
    """``pooler`` on ``rois`` (K, 5) = (image index, x1, y1, x2, y2) of S×S canvases → (K, C, o, o).

    Same level assignment and ``roi_align`` calls as ``MultiScaleRoIAlign``, with the per-level
    results put back in roi order by a gather (no scatter).
    """
    x = [features[name] for name in pooler.featmap_names]
    if pooler.scales is None or pooler.map_levels is None:
        # cached on the module as MultiScaleRoIAlign.forward does, so that the model's own eager
        # forward afterwards uses the canvas scales too (torchvision infers them from the first
        # image size it sees; a landscape image smaller than the canvas would give wrong ones)
        pooler.scales, pooler.map_levels = _setup_scales(
            x, [(size, size)], pooler.canonical_scale, pooler.canonical_level
        )
    scales, mapper = pooler.scales, pooler.map_levels
    levels = mapper([rois[:, 1:]])  # (K,)
    pooled: list[Tensor] = []
    order: list[Tensor] = []
    for level, (feature, scale) in enumerate(zip(x, scales, strict=True)):
        idx = torch.where(levels == level)[0]
        pooled.append(
            roi_align(
                feature,
                rois[idx],
                output_size=pooler.output_size,
                spatial_scale=scale,
                sampling_ratio=pooler.sampling_ratio,
            )
        )
        order.append(idx)
    by_level = torch.cat(pooled)  # (K, C, o, o) in level order
    return by_level[torch.argsort(torch.cat(order))]  # back to roi order


def propose(model: MaskRCNN, images: Tensor, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """RPN on a batch: proposals (B, P, 4) sorted by objectness and their validity (B, P) bool."""
    rpn = model.rpn
    size = int(images.shape[-1])
    feats = list(features.values())
    logits, deltas = rpn.head(feats)
    anchors = rpn.anchor_generator(ImageList(images[:1], [(size, size)]), feats)[0]  # (A, 4), same per image
    per_level = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in logits]  # anchors per level
    objectness = torch.cat([_flatten_level(o, 1) for o in logits], 1)[..., 0]  # (B, A)
    regression = torch.cat([_flatten_level(d, 4) for d in deltas], 1)  # (B, A, 4)
    proposals = rpn.box_coder.decode_single(
        regression.reshape(-1, 4), anchors.unsqueeze(0).expand_as(regression).reshape(-1, 4)
    ).view_as(regression)  # (B, A, 4)
    top: list[Tensor] = []
    level_ids: list[int] = []
    offset = 0
    for level, count in enumerate(per_level):
        k = min(rpn.pre_nms_top_n(), count)
        top.append(objectness[:, offset : offset + count].topk(k, dim=1)[1] + offset)
        level_ids += [level] * k
        offset += count
    idx = torch.cat(top, 1)  # (B, N)
    scores = torch.sigmoid(torch.gather(objectness, 1, idx))  # (B, N)
    boxes = _gather_rows(proposals, idx).clamp(0, size)  # (B, N, 4) clipped to the canvas
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    valid = (w >= rpn.min_size) & (h >= rpn.min_size) & (scores >= rpn.score_thresh)
    lvl = torch.tensor(level_ids, dtype=torch.int64, device=images.device)
    num_levels = len(per_level)
    # scores per (image, level): a box scores only in its own level's row
    own = lvl[None, :] == torch.arange(num_levels, device=images.device)[:, None]  # (L, N)
    grid = torch.where(own[None] & valid[:, None, :], scores[:, None, :], SENTINEL)  # (B, L, N)
    kept = _keep_scores(grouped_nms(boxes, grid, rpn.nms_thresh), grid).amax(1)  # (B, N)
    best, order = kept.topk(min(rpn.post_nms_top_n(), kept.shape[1]), dim=1)  # (B, P)
    return _gather_rows(boxes, order), best > _SENTINEL_THRESHOLD


def detect(
    model: MaskRCNN, images: Tensor, features: dict[str, Tensor], proposals: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Box and mask heads on padded proposals (B, P, 4) → concatenated detections of all images.

    Returns boxes (N, 4), scores (N,), labels (N,) 1-based, mask probabilities (N, M, M) and
    batch_index (N,), ordered by image, then decreasing score; at most ``detections_per_img`` each.
    """
    heads = model.roi_heads
    size = int(images.shape[-1])
    p = valid.shape[1]  # the batch size stays symbolic (-1 in every reshape)
    flat = torch.where(valid.flatten())[0]  # (R,) valid proposals only
    rois = torch.cat([(flat // p).to(proposals.dtype)[:, None], proposals.flatten(0, 1)[flat]], 1)  # (R, 5)
    pooled = multiscale_roi_align(heads.box_roi_pool, features, rois, size)
    class_logits, box_regression = heads.box_predictor(heads.box_head(pooled))  # (R, C+1), (R, 4(C+1))
    boxes = heads.box_coder.decode_single(box_regression, rois[:, 1:])  # (R, 4(C+1))
    boxes = boxes.unflatten(1, (-1, 4))[:, 1:].clamp(0, size)  # (R, C, 4), background dropped
    scores = torch.softmax(class_logits, -1)[:, 1:]  # (R, C)
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    scores = torch.where((scores > heads.score_thresh) & (w >= 1e-2) & (h >= 1e-2), scores, SENTINEL)
    # back to the padded (B*P) layout: padded slots read a sentinel row
    taken = valid.flatten().long()
    slot = torch.where(taken > 0, torch.cumsum(taken, 0) - 1, taken.sum())  # (B*P,) row or sentinel row
    boxes = torch.cat([boxes, boxes.new_zeros((1, *boxes.shape[1:]))])[slot]  # (B*P, C, 4)
    scores = torch.cat([scores, scores.new_full((1, scores.shape[1]), SENTINEL)])[slot]  # (B*P, C)
    c = scores.shape[1]
    boxes = boxes.view(-1, p, c, 4).transpose(1, 2).reshape(-1, p, 4)  # groups = (image, class)
    scores = scores.view(-1, p, c).transpose(1, 2).reshape(-1, 1, p)
    kept = _keep_scores(grouped_nms(boxes, scores, heads.nms_thresh), scores).view(-1, c * p)
    best, order = kept.topk(min(heads.detections_per_img, c * p), dim=1)  # (B, D)
    d = best.shape[1]
    chosen = torch.where(best.flatten() > _SENTINEL_THRESHOLD)[0]  # (N,)
    batch_index = chosen // d
    pick = order.flatten()[chosen]  # index into (C, P) of its image
    cls, prop = pick // p, pick % p
    det_boxes = boxes.view(-1, c, p, 4)[batch_index, cls, prop]  # (N, 4)
    det_scores = best.flatten()[chosen]
    labels = cls + 1
    mask_rois = torch.cat([batch_index.to(det_boxes.dtype)[:, None], det_boxes], 1)  # (N, 5)
    mask_features = multiscale_roi_align(heads.mask_roi_pool, features, mask_rois, size)
    mask_logits = heads.mask_predictor(heads.mask_head(mask_features))  # (N, C+1, M, M)
    masks = torch.gather(
        mask_logits.sigmoid(), 1, labels.view(-1, 1, 1, 1).expand(-1, 1, *mask_logits.shape[2:])
    )[:, 0]  # (N, M, M)
    return det_boxes, det_scores, labels, masks, batch_index
