"""The C preprocessing (``vitbench.service._resize``): built, and strict about what it is given.

Its output is compared bit for bit with numpy's resize-then-normalize in test_service_pipeline.py
(and, through the service, with torchvision's transform); here, that the install built it, that bad
arrays are refused with a message instead of being read or written out of bounds, and that numpy
takes over when it is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vitbench.service import preprocess as pre

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def test_the_install_built_the_native_preprocessing() -> None:
    assert pre.NATIVE_PREPROCESS, (
        "vitbench.service._resize is missing: setup.py builds it when a C compiler and the Python "
        "headers are present (`make venv` reinstalls); the service then preprocesses with numpy, slower"
    )


def _arguments() -> dict[str, Any]:
    """A valid call: a 4×6 image resized to 2×3 into a 4×4 canvas."""
    return {
        "image": np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3),
        "height": 4,
        "width": 6,
        "r0": np.array([0, 2], np.int64),
        "r1": np.array([1, 3], np.int64),
        "wy": np.array([0.5, 0.5], np.float32),
        "c0": np.array([0, 2, 4], np.int64),
        "c1": np.array([1, 3, 5], np.int64),
        "wx": np.array([0.5, 0.5, 0.5], np.float32),
        "mean": np.zeros(3, np.float32),
        "std": np.ones(3, np.float32),
        "out": np.zeros((1, 3, 4, 4), np.float32),
        "canvas": 4,
    }


def _call(**changes: Any) -> np.ndarray:
    assert pre._native_resize is not None
    arguments = {**_arguments(), **changes}
    pre._native_resize.resize_normalize(*arguments.values())
    out: np.ndarray = arguments["out"]
    return out


def test_a_valid_call_averages_the_four_source_pixels_and_leaves_the_padding() -> None:
    image = _arguments()["image"].astype(np.float32)
    # each output pixel reads the 2×2 block below-right of its source corner, weighed equally: [2, 3, 3]
    expected = (image[0::2, 0::2] + image[0::2, 1::2] + image[1::2, 0::2] + image[1::2, 1::2]) / 4
    out = _call()
    np.testing.assert_array_equal(out[0, :, :2, :3], expected.transpose(2, 0, 1))
    assert not out[0, :, 2:, :].any() and not out[0, :, :, 3:].any()


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"image": np.zeros((4, 6, 3), np.float32)}, TypeError, "image must be a C-contiguous uint8 array"),
        ({"wy": np.array([0.5, 0.5])}, TypeError, "wy must be a C-contiguous float32 array"),
        ({"c0": np.array([0, 2, 4], np.int32)}, TypeError, "c0 must be a C-contiguous int64 array"),
        ({"out": np.zeros((1, 3, 4, 4))}, TypeError, "out must be a C-contiguous float32 array"),
        ({"out": np.zeros((1, 3, 4, 4), np.float32)[..., ::-1]}, ValueError, "contiguous"),
        ({"r1": np.array([1, 4], np.int64)}, ValueError, r"r1\[1\] = 4 is outside 0..3"),
        ({"c0": np.array([-1, 2, 4], np.int64)}, ValueError, r"c0\[0\] = -1 is outside 0..5"),
        ({"width": 5}, ValueError, "image must be \\[height, width, 3\\]"),
        ({"wx": np.zeros(2, np.float32)}, ValueError, "one per output column"),
        ({"canvas": 2}, ValueError, "at most 2 each"),
        ({"out": np.zeros((1, 3, 4, 3), np.float32)}, ValueError, r"out be \[3, 4, 4\]"),
        ({"mean": np.zeros(4, np.float32)}, ValueError, "mean and std must have 3 items"),
    ],
)
def test_bad_arrays_are_refused(changes: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _call(**changes)


def test_a_read_only_canvas_is_refused() -> None:
    out = np.zeros((1, 3, 4, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises((TypeError, ValueError, BufferError), match=r"writable|read-only"):
        _call(out=out)


def test_the_numpy_path_is_used_when_the_extension_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    expected, box = pre.preprocess(pixels, 64, MEAN, STD)
    monkeypatch.setattr(pre, "_native_resize", None)
    monkeypatch.setattr(pre, "NATIVE_PREPROCESS", False)
    batch, same_box = pre.preprocess(pixels, 64, MEAN, STD)
    assert same_box == box
    np.testing.assert_array_equal(batch, expected)
    with pytest.raises(RuntimeError, match="not built"):
        pre.preprocess(pixels, 64, MEAN, STD, native=True)
