"""COCO RLE built from the box-sized crop, or straight from the mask probabilities, equals pycocotools'
encoding of the full-image mask."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vitbench.service.masks import (
    PastedMask,
    encode_rle,
    encode_rle_many,
    paste_mask,
    rle_counts,
    rle_counts_many,
)


def _reference_rle(mask: PastedMask) -> dict[str, object]:
    """The pre-crop implementation: the whole H×W mask in a Fortran buffer through pycocotools."""
    full = np.asfortranarray(mask.full().astype(np.uint8)[:, :, None])  # [H, W, 1]
    rle = mask_utils.encode(full)[0]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _random_box(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Boxes of every kind: inside, straddling an edge, outside, tiny, zero-size, full-image."""
    kind = rng.integers(0, 6)
    if kind == 0:  # zero width or height
        x, y = rng.uniform(-5, width + 5), rng.uniform(-5, height + 5)
        return np.array([x, y, x + rng.choice([0.0, rng.uniform(0, 3)]), y], np.float32)
    if kind == 1:  # tiny
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        return np.array([x, y, x + rng.uniform(0, 2), y + rng.uniform(0, 2)], np.float32)
    if kind == 2:  # the whole image (scale_boxes clips to it), or larger
        pad = rng.uniform(0, 3)
        return np.array([-pad, -pad, width + pad, height + pad], np.float32)
    if kind == 3:  # wholly outside
        x = rng.choice([rng.uniform(-60, -20), rng.uniform(width + 5, width + 60)])
        return np.array([x, 10, x + 15, 40], np.float32)
    x1, y1 = rng.uniform(-0.3 * width, width), rng.uniform(-0.3 * height, height)
    return np.array([x1, y1, x1 + rng.uniform(1, width), y1 + rng.uniform(1, height)], np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_crop_rle_is_identical_to_full_image_encoding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(150):
        height, width = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        box = _random_box(rng, height, width)
        # probabilities: blobs, all-on, all-off, speckle — so runs start/end at every crop edge
        style = rng.integers(0, 4)
        probs = {
            0: rng.random((28, 28)),
            1: np.ones((28, 28)),
            2: np.zeros((28, 28)),
            3: (rng.random((28, 28)) > 0.5).astype(np.float64),
        }[int(style)].astype(np.float32)
        mask = paste_mask(probs, box, height, width)
        ours, reference = encode_rle(mask), _reference_rle(mask)
        assert ours == reference, (height, width, box, style)
        decoded = mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), mask.full())


def test_runs_merge_across_columns_of_a_full_height_crop() -> None:
    crop = np.zeros((5, 3), dtype=bool)
    crop[3:, 0] = crop[:, 1] = crop[:2, 2] = True  # one run from column 0 through column 2
    mask = PastedMask(crop, x0=2, y0=0, height=5, width=6)
    assert rle_counts(mask).tolist() == [2 * 5 + 3, 2 + 5 + 2, 5 - 2 + 5]
    assert encode_rle(mask) == _reference_rle(mask)


def test_mask_touching_the_last_pixel_has_no_trailing_zero_run() -> None:
    mask = PastedMask(np.ones((2, 2), dtype=bool), x0=3, y0=2, height=4, width=5)
    assert rle_counts(mask).tolist() == [3 * 4 + 2, 2, 2, 2]
    assert encode_rle(mask) == _reference_rle(mask)


def _random_probs(rng: np.random.Generator) -> np.ndarray:
    """[28, 28] float32 probabilities: blobs, all-on, all-off or speckle."""
    style = int(rng.integers(0, 4))
    return {
        0: rng.random((28, 28)),
        1: np.ones((28, 28)),
        2: np.zeros((28, 28)),
        3: (rng.random((28, 28)) > 0.5).astype(np.float64),
    }[style].astype(np.float32)


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
@pytest.mark.parametrize("seed", range(4))
def test_rle_from_probabilities_is_identical_to_pasting_then_encoding(seed: int, native: bool) -> None:
    """``encode_rle_many`` (the service's RLE path) == pycocotools on the full pasted mask, per mask."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(40):
        height, width = int(rng.integers(1, 130)), int(rng.integers(1, 130))
        n = int(rng.integers(0, 6))
        probs = np.stack([_random_probs(rng) for _ in range(n)]) if n else np.zeros((0, 28, 28), np.float32)
        boxes = np.stack([_random_box(rng, height, width) for _ in range(n)]) if n else np.zeros((0, 4))
        ours = encode_rle_many(probs, boxes, height, width, native=native)
        assert len(ours) == n
        for k in range(n):
            mask = paste_mask(probs[k], boxes[k], height, width)
            assert ours[k] == _reference_rle(mask), (height, width, boxes[k])


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_rle_from_probabilities_on_camera_sized_images(native: bool) -> None:
    """Large boxes at 1920×1080 (counts well past 5-bit groups and 16-bit values) stay identical."""
    rng = np.random.default_rng(7)
    height, width = 1080, 1920
    boxes = np.array(
        [[-40, -30, 1960, 1100], [0, 0, 1920, 1080], [100.3, 50.7, 1500.2, 1079.9], [1800, 900, 2500, 1500]],
        dtype=np.float32,
    )
    probs = np.stack([_random_probs(rng) for _ in range(len(boxes))])
    probs[0] = rng.random((28, 28)).astype(np.float32)  # speckle over the whole image: many runs
    for k, counts in enumerate(encode_rle_many(probs, boxes, height, width, native=native)):
        assert counts == _reference_rle(paste_mask(probs[k], boxes[k], height, width))


def test_rle_from_probabilities_with_one_off_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work arrays over the kept size are one-off, smaller ones are reused from call to call: the counts
    stay identical either way, and no returned array shares memory with a work array."""
    import vitbench.service.masks as masks

    monkeypatch.setattr(masks, "_SCRATCH_KEEP", 500)
    rng = np.random.default_rng(11)
    earlier: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(60):
        height, width = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        probs, box = _random_probs(rng)[None], _random_box(rng, height, width)[None]
        expected = rle_counts(paste_mask(probs[0], box[0], height, width))
        (counts,) = rle_counts_many(probs, box, height, width)
        assert np.array_equal(counts, expected)
        earlier.append((counts, counts.copy()))
    assert all(np.array_equal(kept, copy) for kept, copy in earlier)  # later calls overwrote nothing
