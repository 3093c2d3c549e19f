"""COCO evaluation of a torchvision Mask R-CNN: inference → COCO result dicts → ``COCOeval``.

Metrics are reported like detectron2, in percent: ``bbox/AP``, ``bbox/AP50``, ``bbox/AP75``,
``bbox/APs``, ``bbox/APm``, ``bbox/APl`` and the same under ``segm/``. A metric COCOeval cannot
compute (no ground truth in that size range → -1) is left out rather than written as NaN. Crowd regions
of the ground truth are handled by COCOeval (detections matched to them are ignored).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vitbench.trainer import distributed as du
from vitbench.trainer.data.coco import CocoDetection, collate, to_model_inputs

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES: tuple[str, ...] = ("bbox", "segm")


def outputs_to_coco(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_cat_id: Mapping[int, int],
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Convert torchvision detections (boxes XYXY in original pixels, ``masks`` (N, 1, H, W) probabilities)
    into COCO result dicts with ``bbox`` [x, y, w, h] and, when masks are present, an RLE ``segmentation``."""
    from pycocotools import mask as mask_utils

    results: list[dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]  # (N, 4) xyxy -> xywh
        scores = out["scores"].detach().float().cpu().tolist()
        labels = out["labels"].detach().cpu().tolist()
        rles: list[Any] = [None] * len(scores)
        if "masks" in out:
            binary = (out["masks"].detach().float().cpu()[:, 0] > mask_threshold).numpy()  # (N, H, W)
            encoded = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
            for rle in encoded:
                rle["counts"] = rle["counts"].decode("ascii")
            rles = list(encoded)
        for k in range(len(scores)):
            r: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(label_to_cat_id[int(labels[k])]),
                "bbox": [round(float(v), 3) for v in xywh[k].tolist()],
                "score": float(scores[k]),
            }
            if rles[k] is not None:
                r["segmentation"] = rles[k]
            results.append(r)
    return results


def coco_metrics(
    coco_gt: Any, results: Sequence[Mapping[str, Any]], iou_types: Iterable[str] = IOU_TYPES
) -> dict[str, float]:
    """Run ``COCOeval`` for each IoU type; return ``{"bbox/AP": ..., ...}`` in percent.

    With no detections every AP is 0 (COCO defines AP over detections; none means nothing found).
    """
    from pycocotools.cocoeval import COCOeval

    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        dets = [dict(r) for r in results if iou_type == "bbox" or "segmentation" in r]
        if not dets:
            metrics.update({f"{iou_type}/{m}": 0.0 for m in METRIC_NAMES})
            continue
        if iou_type == "bbox":  # loadRes would derive boxes from segmentations; keep ours
            for d in dets:
                d.pop("segmentation", None)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for name, value in zip(METRIC_NAMES, ev.stats[:6], strict=True):
            if value >= 0:
                metrics[f"{iou_type}/{name}"] = float(value) * 100.0
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: CocoDetection,
    device: torch.device,
    indices: Sequence[int] | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
) -> list[dict[str, Any]]:
    """Run the model (put in eval mode) over ``dataset`` (or the given indices) and return COCO results."""
    model.eval()
    subset: Any = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(
        subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    results: list[dict[str, Any]] = []
    for images, targets in loader:
        inputs, _ = to_model_inputs(images, None, device)
        ctx = (
            torch.autocast(device_type=device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            outputs = model(inputs)
        image_ids = [int(t["image_id"]) for t in targets]
        results += outputs_to_coco(outputs, image_ids, dataset.label_to_cat_id)
    return results


def evaluate(
    model: nn.Module,
    dataset: CocoDetection,
    device: torch.device,
    batch_size: int = 1,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    iou_types: Iterable[str] = IOU_TYPES,
) -> dict[str, float]:
    """Distributed-aware COCO evaluation: each rank predicts its shard (``rank::world``), rank 0 runs
    COCOeval on the gathered results, every rank returns the same metrics dict."""
    rank = torch.distributed.get_rank() if du.is_initialized() else 0
    world = torch.distributed.get_world_size() if du.is_initialized() else 1
    shard = list(range(rank, len(dataset), world))
    local = predict(model, dataset, device, shard, batch_size, num_workers, amp_dtype)
    gathered = du.all_gather_object(local)
    metrics: dict[str, float] = {}
    if rank == 0:
        merged = [r for part in gathered for r in part]
        metrics = coco_metrics(dataset.coco, merged, iou_types)
    return du.broadcast_object(metrics)
