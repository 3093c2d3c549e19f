"""Parity check: eager PyTorch vs an exported runtime on the same pre-processed images.

Detections are compared order-insensitively: each eager detection is matched greedily (highest
score first) to the unmatched exported detection with the same label and the highest box IoU
(a counterpart needs IoU ≥ 0.5; the tolerances below then apply to every matched pair).
An image passes when the counts agree (detections whose score is within ``score_diff_max`` of the
score threshold may be missing on either side), every match has box IoU ≥ 0.99, score difference
≤ 1e-3 and mask IoU ≥ 0.95 (28×28 probabilities thresholded at 0.5; two empty masks count as 1).
The check as a whole needs at least one matched detection: empty outputs on both sides compare nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vitbench.registry.manifest import ImageParity, ParityReport

#: ``images (1, 3, S, S) float32 -> (boxes (N, 4), scores (N,), labels (N,), masks (N, 28, 28))``
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Tolerances:
    """The thresholds of the parity check."""

    box_iou_min: float = 0.99
    score_diff_max: float = 1e-3
    mask_iou_min: float = 0.95


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes → ``(N, M)``."""
    a = a.astype(np.float64)[:, None, :]  # (N, 1, 4)
    b = b.astype(np.float64)[None, :, :]  # (1, M, 4)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), (inter == 0) * 1.0)


def mask_iou(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two probability masks after thresholding; 1.0 when both are empty."""
    ma, mb = a >= threshold, b >= threshold
    union = np.logical_or(ma, mb).sum()
    return 1.0 if union == 0 else float(np.logical_and(ma, mb).sum() / union)


def compare_detections(
    name: str,
    eager: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    exported: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    score_threshold: float,
    tol: Tolerances = Tolerances(),
) -> ImageParity:
    """Match and compare one image's detections (see the module docstring)."""
    eb, es, el, em = eager
    xb, xs, xl, xm = exported
    iou = box_iou(eb, xb) if len(eb) and len(xb) else np.zeros((len(eb), len(xb)))
    used: set[int] = set()
    box_ious: list[float] = []
    score_diffs: list[float] = []
    mask_ious: list[float] = []
    unmatched_ok = True
    for i in np.argsort(-es, kind="stable"):
        candidates = [j for j in range(len(xb)) if j not in used and int(xl[j]) == int(el[i])]
        j = max(candidates, key=lambda c: iou[i, c], default=None)
        if j is None or iou[i, j] < 0.5:  # no counterpart: only tolerated right at the score threshold
            if abs(float(es[i]) - score_threshold) > tol.score_diff_max:
                unmatched_ok = False
            continue
        used.add(j)
        box_ious.append(float(iou[i, j]))
        score_diffs.append(abs(float(es[i]) - float(xs[j])))
        mask_ious.append(mask_iou(em[i], xm[j]))
    for j in range(len(xb)):
        if j not in used and abs(float(xs[j]) - score_threshold) > tol.score_diff_max:
            unmatched_ok = False
    min_box = min(box_ious) if box_ious else None
    max_score = max(score_diffs) if score_diffs else None
    min_mask = min(mask_ious) if mask_ious else None
    passed = (
        unmatched_ok
        and (min_box is None or min_box >= tol.box_iou_min)
        and (max_score is None or max_score <= tol.score_diff_max)
        and (min_mask is None or min_mask >= tol.mask_iou_min)
    )
    return ImageParity(
        image=name,
        n_eager=len(eb),
        n_exported=len(xb),
        n_matched=len(box_ious),
        min_box_iou=min_box,
        max_score_diff=max_score,
        min_mask_iou=min_mask,
        passed=bool(passed),
    )


def run_parity(
    eager: Runner,
    exported: Runner,
    images: Sequence[tuple[str, np.ndarray]],
    runtime: str,
    score_threshold: float,
    tol: Tolerances = Tolerances(),
) -> ParityReport:
    """Run both runners on every ``(name, (1, 3, S, S) float32)`` image and build the report.

    The report fails when no detection was matched on any image: two empty outputs prove nothing.
    """
    if not images:
        raise ValueError("parity needs at least one image")
    results = tuple(
        compare_detections(name, eager(x), exported(x), score_threshold, tol) for name, x in images
    )
    return ParityReport(
        runtime=runtime,
        box_iou_min=tol.box_iou_min,
        score_diff_max=tol.score_diff_max,
        mask_iou_min=tol.mask_iou_min,
        score_threshold=score_threshold,
        images=results,
        passed=all(r.passed for r in results) and any(r.n_matched for r in results),
    )


def torch_runner(module: object) -> Runner:
    """Eager runner around an :class:`~trainer.export.onnx.ExportableDetector` (one image)."""
    import torch

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            boxes, scores, labels, masks = module(torch.from_numpy(x))[:4]  # type: ignore[operator]
        return boxes.numpy(), scores.numpy(), labels.numpy(), masks.numpy()

    return run


def onnx_runner(session: object) -> Runner:
    """Runner around an ``onnxruntime.InferenceSession`` of the exported graph (one image)."""

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = session.run(["boxes", "scores", "labels", "mask_logits"], {"images": x})  # type: ignore[attr-defined]
        return out[0], out[1], out[2], out[3]

    return run


def onnx_batch_runner(session: object, images: Sequence[tuple[str, np.ndarray]]) -> Runner:
    """Runner answering each image from ONE session call on all ``images`` stacked into a batch.

    The batch's outputs are split by ``batch_index``; asking for an image not in ``images`` fails.
    """
    names = ["boxes", "scores", "labels", "mask_logits", "batch_index"]
    batch = np.concatenate([x for _, x in images])  # (B, 3, S, S)
    boxes, scores, labels, masks, index = session.run(names, {"images": batch})  # type: ignore[attr-defined]
    by_image = {
        i: (boxes[index == i], scores[index == i], labels[index == i], masks[index == i])
        for i in range(len(images))
    }

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        for i, (_, candidate) in enumerate(images):
            if candidate is x or np.array_equal(candidate, x):
                return by_image[i]
        raise KeyError("image was not part of the batch")

    return run
