"""``benchmarks/decode_jpeg.py`` and ``benchmarks/preprocess.py`` time the service's image stages beside
the plain way of doing them, and report whether both give the same pixels (bits)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import decode_jpeg  # noqa: E402
import preprocess as preprocess_bench  # noqa: E402


def test_decode_rows_compare_the_service_with_pillow() -> None:
    row = decode_jpeg.measure(320, 240, 128, 4.0, repeats=2)
    assert row["image"] == "320x240" and row["scale"] == "1/1" and row["decoded"] == "320x240"
    assert row["same_pixels"] is True
    assert row["service_ms"] > 0 and row["pillow_ms"] > 0
    assert row["ratio"] == pytest.approx(row["service_ms"] / row["pillow_ms"], rel=0.01)


def test_preprocess_rows_compare_the_service_with_the_plain_composition() -> None:
    row = preprocess_bench.measure(640, 480, 128, 4.0, repeats=2)
    assert (row["decoded"], row["canvas"], row["same_bits"]) == ("640x480", 128, True)
    assert row["numpy_ratio"] == pytest.approx(row["numpy_ms"] / row["plain_ms"], rel=0.01)
    assert row["c_ms"] is not None  # the install built the extension (test_native_preprocess.py)
    assert row["c_ratio"] == pytest.approx(row["c_ms"] / row["plain_ms"], rel=0.01)


def test_the_plain_composition_is_resize_normalize_pad() -> None:
    pixels = np.full((20, 40, 3), 200, np.uint8)
    batch = preprocess_bench.plain(pixels, 64)
    assert batch.shape == (1, 3, 64, 64)
    expected = (200 - np.float32(preprocess_bench.MEAN)) / np.float32(preprocess_bench.STD)
    np.testing.assert_allclose(
        batch[0, :, :32, :], np.broadcast_to(expected[:, None, None], (3, 32, 64)), rtol=1e-6
    )
    assert not batch[0, :, 32:, :].any()
