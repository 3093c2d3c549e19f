"""The service's mask pasting equals torchvision's ``paste_masks_in_image`` pixel for pixel on random boxes.

Boxes are drawn inside and across every border of the image, from sub-pixel to larger than the
image; what the client receives (COCO RLE, decoded by pycocotools) must equal torchvision's pasted
probabilities thresholded at 0.5 (COCO evaluation's rule).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image

from vitbench.service.masks import encode_rle, encode_rle_many, paste_mask

H, W = 70, 95


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4) float32 x1, y1, x2, y2: centres anywhere in the image, sizes 0.3 px to 1.5x the image.

    Every box overlaps the image (torchvision's paste fails on a box entirely above/left of it; the
    detector clips its boxes to the image, so such boxes never reach the service).
    """
    cx = rng.uniform(0, W, n)
    cy = rng.uniform(0, H, n)
    bw = np.exp(rng.uniform(np.log(0.3), np.log(1.5 * W), n))
    bh = np.exp(rng.uniform(np.log(0.3), np.log(1.5 * H), n))
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_paste_equals_torchvision_on_random_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    boxes = _random_boxes(rng, n)
    # Smooth blobs (like real mask heads) plus noise, so the 0.5 contour crosses every box.
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    centres = rng.uniform(0.2, 0.8, (n, 2, 1, 1))
    logits = 4.0 - 12.0 * ((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) * rng.uniform(
        1, 4, (n, 1, 1)
    )
    probs = (1 / (1 + np.exp(-(logits + rng.normal(0, 0.5, (n, 28, 28)))))).astype(np.float32)

    ref = paste_masks_in_image(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (H, W))[:, 0] > 0.5
    partly_outside = 0
    # the service's RLE paths: no pasted crop in between
    direct = encode_rle_many(probs, boxes, H, W, native=False)
    native = encode_rle_many(probs, boxes, H, W, native=True)
    for i in range(n):
        pasted = paste_mask(probs[i], boxes[i], H, W)
        expected = ref[i].numpy()
        assert np.array_equal(pasted.full(), expected), f"box {i}: {boxes[i].tolist()}"
        assert pasted.area == int(expected.sum())
        rle = encode_rle(pasted)
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert decoded.shape == (H, W) and np.array_equal(decoded.astype(bool), expected), f"rle of box {i}"
        assert direct[i] == rle, f"direct rle of box {i}"
        assert native[i] == rle, f"native rle of box {i}"
        x1, y1, x2, y2 = boxes[i]
        partly_outside += bool(expected.any() and (x1 < 0 or y1 < 0 or x2 > W or y2 > H))
    assert partly_outside >= 30  # the draw really exercises boxes cut by the image border
    assert int(ref.any(dim=(1, 2)).sum()) >= n // 2  # and most boxes paste something
