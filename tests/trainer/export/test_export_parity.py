"""The parity comparison itself: IoU against torchvision, and that real discrepancies fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from vitbench.trainer.export.parity import Tolerances, box_iou, compare_detections, mask_iou, run_parity

Det = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _dets(n: int = 5, seed: int = 0) -> Det:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 80, size=(n, 2))
    wh = rng.uniform(8, 40, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = np.sort(rng.uniform(0.2, 0.9, size=n)).astype(np.float32)[::-1].copy()
    labels = rng.integers(1, 4, size=n).astype(np.int64)
    masks = rng.uniform(0, 1, size=(n, 28, 28)).astype(np.float32)
    return boxes, scores, labels, masks


def test_box_iou_matches_torchvision() -> None:
    a, b = _dets(6, 1)[0], _dets(7, 2)[0]
    np.testing.assert_allclose(
        box_iou(a, b), tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), atol=1e-6
    )


def test_mask_iou() -> None:
    a = np.zeros((28, 28), np.float32)
    b = a.copy()
    assert mask_iou(a, b) == 1.0  # both empty
    a[:14] = 0.9
    b[7:21] = 0.8
    assert mask_iou(a, b) == pytest.approx(7 / 21)


def test_identical_and_permuted_detections_pass() -> None:
    d = _dets()
    perm = np.array([3, 0, 4, 1, 2])
    shuffled = (d[0][perm], d[1][perm], d[2][perm], d[3][perm])
    r = compare_detections("x", d, shuffled, score_threshold=0.05)
    assert r.passed and r.n_matched == 5 and r.min_box_iou == pytest.approx(1.0) and r.max_score_diff == 0


@pytest.mark.parametrize(
    ("what", "expect"),
    [("score", "max_score_diff"), ("box", "min_box_iou"), ("mask", "min_mask_iou"), ("drop", None)],
)
def test_real_discrepancies_fail(what: str, expect: str | None) -> None:
    d = _dets()
    boxes, scores, labels, masks = (a.copy() for a in d)
    if what == "score":
        scores[2] += 0.01
    elif what == "box":
        boxes[1] += 2.0
    elif what == "mask":
        masks[0] = 1.0 - masks[0]
    else:
        boxes, scores, labels, masks = boxes[:4], scores[:4], labels[:4], masks[:4]
    r = compare_detections("x", d, (boxes, scores, labels, masks), score_threshold=0.05)
    assert not r.passed
    if expect == "max_score_diff":
        assert r.max_score_diff == pytest.approx(0.01, abs=1e-4)
    elif expect == "min_box_iou":
        assert r.min_box_iou is not None and r.min_box_iou < 0.99
    elif expect == "min_mask_iou":
        assert r.min_mask_iou is not None and r.min_mask_iou < 0.95


def test_detection_at_the_threshold_may_be_missing() -> None:
    d = _dets()
    scores = d[1].copy()
    scores[-1] = 0.0505  # within 1e-3 of the 0.05 threshold
    eager = (d[0], scores, d[2], d[3])
    exported = (d[0][:4], scores[:4], d[2][:4], d[3][:4])
    assert compare_detections("x", eager, exported, score_threshold=0.05).passed


def test_run_parity_report() -> None:
    d = _dets()
    image = np.zeros((1, 3, 8, 8), np.float32)
    report = run_parity(lambda x: d, lambda x: d, [("a", image), ("b", image)], "test", 0.05, Tolerances())
    assert report.passed and [i.image for i in report.images] == ["a", "b"]
    bad = run_parity(lambda x: d, lambda x: _dets(seed=9), [("a", image)], "test", 0.05)
    assert not bad.passed
    with pytest.raises(ValueError, match="at least one image"):
        run_parity(lambda x: d, lambda x: d, [], "test", 0.05)
