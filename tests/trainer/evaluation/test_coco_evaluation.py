from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from pycocotools.cocoeval import COCOeval

from vitbench.trainer.data import split_paths
from vitbench.trainer.data.coco import CocoDetection
from vitbench.trainer.evaluation.coco_eval import METRIC_NAMES, coco_metrics, evaluate, outputs_to_coco


def _gt_as_outputs(ds: CocoDetection, shift: float = 0.0) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Ground-truth instances dressed as torchvision detections (score 1, masks as probabilities)."""
    outputs, ids = [], []
    for image_id in ds.ids:
        info = ds.coco.imgs[image_id]
        anns = [a for a in ds.coco.imgToAnns[image_id] if not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes += shift
        masks = (
            torch.stack([torch.from_numpy(ds.coco.annToMask(a)).float() for a in anns])
            if anns
            else torch.zeros(0, info["height"], info["width"])
        )
        outputs.append(
            {
                "boxes": boxes,
                "scores": torch.ones(len(anns)),
                "labels": torch.tensor(
                    [ds.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64
                ),
                "masks": masks[:, None],  # (N, 1, H, W)
            }
        )
        ids.append(image_id)
    return outputs, ids


def test_perfect_detections_score_100_and_match_direct_cocoeval(eval_data: Path) -> None:
    ds = CocoDetection(*split_paths(eval_data, "val"), transforms=None, train=False)
    outputs, ids = _gt_as_outputs(ds)
    results = outputs_to_coco(outputs, ids, ds.label_to_cat_id)
    metrics = coco_metrics(ds.coco, results)
    assert metrics["bbox/AP"] == pytest.approx(100.0) and metrics["segm/AP"] == pytest.approx(100.0)
    # the same numbers pycocotools gives when driven by hand
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(ds.coco, ds.coco.loadRes([dict(r) for r in results]), iou_type)
            ev.evaluate(), ev.accumulate(), ev.summarize()
        for name, value in zip(METRIC_NAMES, ev.stats[:6], strict=True):
            if value >= 0:
                assert metrics[f"{iou_type}/{name}"] == pytest.approx(100 * value)


def test_shifted_boxes_lose_ap_and_empty_results_are_zero(eval_data: Path) -> None:
    ds = CocoDetection(*split_paths(eval_data, "val"), transforms=None, train=False)
    outputs, ids = _gt_as_outputs(ds, shift=4.0)
    metrics = coco_metrics(ds.coco, outputs_to_coco(outputs, ids, ds.label_to_cat_id), ("bbox",))
    assert 0 < metrics["bbox/AP"] < 90 and metrics["bbox/AP50"] > metrics["bbox/AP75"]
    empty = coco_metrics(ds.coco, [])
    assert empty["bbox/AP"] == 0.0 and empty["segm/AP50"] == 0.0


def test_evaluate_runs_a_model_over_the_dataset(eval_data: Path) -> None:
    ds = CocoDetection(*split_paths(eval_data, "val"), transforms=None, train=False)
    gt_outputs, _ = _gt_as_outputs(ds)
    by_size = {tuple(o["masks"].shape[-2:]): o for o in gt_outputs}

    class Oracle(torch.nn.Module):  # returns the ground truth of the image it is shown
        def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            assert all(img.dtype == torch.float32 and img.max() <= 1.0 for img in images)
            return [by_size[tuple(img.shape[-2:])] for img in images]

    if len(by_size) < len(gt_outputs):
        pytest.skip("two val images share a size; the oracle cannot tell them apart")
    metrics = evaluate(Oracle(), ds, torch.device("cpu"), batch_size=2)
    assert metrics["bbox/AP"] == pytest.approx(100.0) and metrics["segm/AP"] == pytest.approx(100.0)
