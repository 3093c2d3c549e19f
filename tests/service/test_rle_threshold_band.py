"""``rle_counts_many`` decides pixels that sit on the 0.5 threshold exactly as ``paste_mask`` does.

``rle_counts_many`` finds each crop column's runs from where the linear interpolation of the mask
crosses 0.5 and recomputes, with paste_mask's float32 operations, only the pixels near 0.5 (within
``RLE_BAND``) and next to a crossing. These tests feed it masks built to sit on the threshold — exactly
0.5, one float32 ulp either side, 1e-7..1e-6 away, flat 0.5 plateaus, checkerboards around 0.5, eighths
(bilinear weights hit 0.5 exactly), gentle ramps over boxes larger than the image, large magnitudes —
and compare with the per-pixel reference (``rle_counts(paste_mask(...))``) and with pycocotools on the
full pasted mask. Without the band the same masks differ (the band is not dead code).
"""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import vitbench.service.masks as masks
from vitbench.service.masks import (
    compress_counts,
    encode_rle_many,
    paste_mask,
    rle_counts,
    rle_counts_many,
    rle_strings_native,
)
from vitbench.service.preprocess import _source_weights

HALF = np.float32(0.5)


def _near_half(rng: np.random.Generator) -> np.ndarray:
    """[28, 28] float32 probabilities on or next to 0.5, of one of nine kinds."""
    kind = int(rng.integers(0, 9))
    random = rng.random((28, 28)).astype(np.float32)
    if kind == 0:  # 0.5 plateaus with holes
        probs = np.where(rng.random((28, 28)) < 0.7, HALF, random)
    elif kind == 1:  # one float32 ulp either side of 0.5, and 0.5
        up, down = np.nextafter(HALF, np.float32(1)), np.nextafter(HALF, np.float32(0))
        probs = np.where(rng.random((28, 28)) < 0.5, up, down)
        probs = np.where(rng.random((28, 28)) < 0.2, HALF, probs)
    elif kind == 2:  # 1e-7.5 .. 1e-5.5 either side
        offset = rng.choice([-1.0, 1.0], (28, 28)) * 10 ** rng.uniform(-7.5, -5.5, (28, 28))
        probs = HALF + offset.astype(np.float32)
    elif kind == 3:  # a checkerboard around 0.5
        step = np.float32(10 ** rng.uniform(-7.5, -5))
        yy, xx = np.mgrid[:28, :28]
        probs = np.where((yy + xx) % 2 == 0, HALF + step, HALF - step)
    elif kind == 4:  # a gentle plane through 0.5: many rows near the threshold
        yy, xx = np.mgrid[:28, :28] / 27.0
        dy, dx = rng.uniform(-1, 1, 2) * 10 ** rng.uniform(-6, -2)
        probs = HALF + dy * (yy - rng.random()) + dx * (xx - rng.random())
    elif kind == 5:  # eighths: the interpolation's products and sums are exact, so exactly 0.5 often
        probs = rng.integers(0, 9, (28, 28)) / 8.0
    elif kind == 6:  # everything exactly 0.5
        probs = np.full((28, 28), HALF)
    elif kind == 7:  # 0/1: crossings at steep slopes
        probs = (random > 0.5).astype(np.float32)
    else:  # logits-sized values around 0.5: the band scales with the largest magnitude
        probs = HALF + (random - HALF) * np.float32(10 ** rng.uniform(0, 3))
        return probs.astype(np.float32)
    return np.clip(probs, 0, 1).astype(np.float32)


def _boxes(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """[n, 4] float32 boxes from 1 px to 2.5× the image, anywhere from half outside to inside it."""
    bw, bh = rng.uniform(1, 2.5 * width, n), rng.uniform(1, 2.5 * height, n)
    x, y = rng.uniform(-0.5 * bw, width), rng.uniform(-0.5 * bh, height)
    return np.stack([x, y, x + bw, y + bh], axis=1).astype(np.float32)


def _mismatches(probs: np.ndarray, boxes: np.ndarray, height: int, width: int) -> int:
    """How many masks' counts differ from the per-pixel reference."""
    ours = rle_counts_many(probs, boxes, height, width)
    return sum(
        not np.array_equal(counts, rle_counts(paste_mask(p, b, height, width)))
        for counts, p, b in zip(ours, probs, boxes, strict=True)
    )


def _native_mismatches(probs: np.ndarray, boxes: np.ndarray, height: int, width: int) -> int:
    """How many masks' strings from the C encoder differ from the per-pixel reference's."""
    ours = rle_strings_native(probs, boxes, height, width)
    return sum(
        text != compress_counts(rle_counts(paste_mask(p, b, height, width)), height, width)
        for text, p, b in zip(ours, probs, boxes, strict=True)
    )


def _draw(seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 300)), int(rng.integers(1, 300))
    probs = np.stack([_near_half(rng) for _ in range(8)])
    return probs, _boxes(rng, 8, height, width), height, width


@pytest.mark.parametrize("block", range(4))
def test_masks_on_the_threshold_match_the_per_pixel_reference(block: int) -> None:
    for seed in range(50 * block, 50 * block + 50):
        probs, boxes, height, width = _draw(seed)
        assert _mismatches(probs, boxes, height, width) == 0, seed


@pytest.mark.parametrize("block", range(4))
def test_native_encoder_on_the_threshold_matches_the_per_pixel_reference(block: int) -> None:
    for seed in range(50 * block, 50 * block + 50):
        probs, boxes, height, width = _draw(seed)
        assert _native_mismatches(probs, boxes, height, width) == 0, seed


@pytest.mark.parametrize("native", [False, True], ids=["numpy", "native"])
def test_masks_on_the_threshold_match_pycocotools(native: bool) -> None:
    for seed in range(1000, 1030):
        probs, boxes, height, width = _draw(seed)
        encoded = encode_rle_many(probs, boxes, height, width, native=native)
        for rle, p, b in zip(encoded, probs, boxes, strict=True):
            full = np.asfortranarray(paste_mask(p, b, height, width).full().astype(np.uint8)[:, :, None])
            reference = mask_utils.encode(full)[0]
            assert rle["counts"] == reference["counts"].decode("ascii"), seed


def test_gentle_ramps_on_boxes_taller_than_a_camera_image() -> None:
    """Full-height crops (runs merge across columns) where hundreds of rows lie within 1e-4 of 0.5."""
    rng = np.random.default_rng(5)
    height, width = 1080, 1920
    yy, xx = np.mgrid[:28, :28] / 27.0
    slopes = 10 ** rng.uniform(-6, -3, (6, 1, 1))
    tilt = rng.uniform(-1, 1, (6, 1, 1))
    probs = (HALF + slopes * ((yy - 0.5) + tilt * (xx - 0.5))).astype(np.float32)
    heights = rng.uniform(1200, 4000, 6)
    x = rng.uniform(0, width - 300, 6)
    boxes = np.stack([x, -heights / 3, x + rng.uniform(20, 300, 6), 2 * heights / 3], 1).astype(np.float32)
    assert _mismatches(probs, boxes, height, width) == 0
    assert _native_mismatches(probs, boxes, height, width) == 0


def test_the_band_is_what_makes_them_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no band (and no allowance for the row estimate's error) the same masks come out different."""
    draws = [_draw(seed) for seed in range(20)]
    assert sum(_mismatches(*draw) for draw in draws) == 0
    monkeypatch.setattr(masks, "RLE_BAND", 0.0)
    monkeypatch.setattr(masks, "_ESTIMATE_KEYS", 0.0)
    assert sum(_mismatches(*draw) for draw in draws) > 0


def test_non_finite_probabilities_fall_back_to_the_per_pixel_path() -> None:
    rng = np.random.default_rng(3)
    probs = rng.random((3, 28, 28)).astype(np.float32)
    probs[0, 5, 5], probs[1, 7, 9] = np.nan, np.inf
    boxes = _boxes(rng, 3, 60, 80)
    assert _mismatches(probs, boxes, 60, 80) == 0
    assert _native_mismatches(probs, boxes, 60, 80) == 0


def test_padding_must_be_positive() -> None:
    with pytest.raises(ValueError, match="padding"):
        rle_counts_many(
            np.zeros((1, 28, 28), np.float32), np.array([[0, 0, 5, 5]], np.float32), 8, 8, padding=0
        )


@pytest.mark.parametrize("seed", range(3))
def test_row_estimate_stays_within_its_bound(seed: int) -> None:
    """The first row whose float32 key (paste_mask's source row) reaches a crossing at key K is the
    ceiling of ``_estimate_rows``, except for rows within ``_ESTIMATE_KEYS·P·inv`` of the estimate."""
    rng = np.random.default_rng(seed)
    p = 30
    for _ in range(40):
        out_h = int(np.exp(rng.uniform(0, np.log(6000))))
        first = int(rng.integers(0, out_h))
        rows = out_h - first
        positions = np.arange(first, out_h, dtype=np.float32)
        r0, _, rw = _source_weights(positions, np.float32(p) / np.float32(out_h), p)
        keys = r0 + rw.astype(np.float64)  # [rows] exact source coordinates
        segment = rng.integers(0, p - 1, 200).astype(np.float32)
        fraction = rng.random(200).astype(np.float32)
        # crossings exactly on some rows' keys too; crossings lie in segments 0..P-2 (the last knot is
        # 0, as the padding), after key 0 (the first knot is 0 too)
        inside = np.flatnonzero((r0 <= p - 2) & (keys > 0))
        if inside.size:
            on_key = rng.choice(inside, 50)
            segment[:50] = r0[on_key]
            fraction[:50] = (keys[on_key] - r0[on_key]).astype(np.float32)
        fraction[(segment == 0) & (fraction == 0)] = np.float32(1e-7)
        crossing = segment.astype(np.float64) + fraction.astype(np.float64)  # [200] K
        inv = np.float32(out_h / p)
        estimate = fraction.copy()
        masks._estimate_rows(estimate, segment + np.float32(0.5), inv, np.float32(first + 0.5))
        bound = masks._ESTIMATE_KEYS * p * float(inv)
        y = np.arange(rows)[None, :]
        reached = keys[None, :] >= crossing[:, None]  # [200, rows]
        predicted = y >= estimate[:, None].astype(np.float64)
        wrong = reached != predicted
        assert (np.abs(y - estimate[:, None].astype(np.float64))[wrong] <= bound).all()
