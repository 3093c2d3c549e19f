"""The C RLE encoder (``vitbench.service._rle``): built, and strict about what it is given; the
service's start-up log names both C extensions it runs with.

Its output is compared with the per-pixel reference and pycocotools in test_rle_threshold_band.py,
test_service_masks.py and test_mask_paste_random.py; here, that the install built it and that bad
arrays are refused with a message instead of being read out of bounds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vitbench.service import masks


def test_the_install_built_the_native_encoder() -> None:
    assert masks.NATIVE_RLE, (
        "vitbench.service._rle is missing: setup.py builds it when a C compiler and the Python headers "
        "are present (`make venv` reinstalls); the service then encodes RLE with numpy, slower"
    )


def _arguments() -> dict[str, Any]:
    """A valid call: one 2×3 crop at (1, 2) of a 5×4 image, from a 4×4 padded mask."""
    return {
        "padded": np.full((1, 4, 4), 0.75, np.float32),
        "p": 4,
        "meta": np.array([[1, 2, 2, 3]], np.int64),  # x0, y0, rows, cols
        "ya": np.array([1, 2], np.int64),
        "wy": np.array([0.25, 0.75], np.float32),
        "xa": np.array([0, 1, 2], np.int64),
        "wx": np.array([0.5, 0.5, 0.5], np.float32),
        "tol": 4e-6,
        "height": 5,
        "width": 4,
    }


def _encode(**changes: Any) -> list[str]:
    assert masks._native_rle is not None
    return masks._native_rle.encode(*{**_arguments(), **changes}.values())


def test_a_valid_call_gives_pycocotools_bytes() -> None:
    from pycocotools import mask as mask_utils

    full = np.zeros((5, 4), np.uint8, order="F")
    full[2:4, 1:4] = 1  # every pixel of the crop reads 0.75
    assert _encode() == [mask_utils.encode(full)["counts"].decode("ascii")]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"wy": np.array([0.25, 0.75])}, TypeError, "wy must be a C-contiguous float32 array"),
        ({"ya": np.array([1, 2], np.int32)}, TypeError, "ya must be a C-contiguous int64 array"),
        ({"ya": np.array([1, 4], np.int64)}, ValueError, r"ya\[1\] = 4 is outside 0..3"),
        ({"xa": np.array([-1, 1, 2], np.int64)}, ValueError, r"xa\[0\] = -1 is outside 0..3"),
        ({"ya": np.array([2, 1], np.int64)}, ValueError, "ya decreases at row 1 of mask 0"),
        ({"meta": np.array([[2, 2, 2, 3]], np.int64)}, ValueError, "is not inside the 4x5 image"),
        ({"wx": np.zeros(2, np.float32)}, ValueError, "xa, wx 3"),
        ({"padded": np.zeros((1, 3, 3), np.float32)}, ValueError, r"padded \[L, p, p\]"),
        ({"tol": 0.3}, ValueError, r"tol in \[0, 0.25\)"),
    ],
)
def test_bad_arrays_are_refused(changes: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _encode(**changes)


def test_the_numpy_path_is_used_when_the_extension_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((3, 28, 28)).astype(np.float32)
    boxes = np.array([[5, 5, 40, 30], [-10, 20, 70, 90], [0, 0, 80, 60]], np.float32)
    expected = masks.encode_rle_many(probs, boxes, 60, 80)
    monkeypatch.setattr(masks, "_native_rle", None)
    monkeypatch.setattr(masks, "NATIVE_RLE", False)
    assert masks.encode_rle_many(probs, boxes, 60, 80) == expected
    with pytest.raises(RuntimeError, match="not built"):
        masks.rle_strings_native(probs, boxes, 60, 80)


@pytest.mark.parametrize(("rle", "resize"), [(True, True), (False, True), (True, False)])
def test_the_service_says_which_c_extensions_it_uses(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fake_model_dir: Path,
    rle: bool,
    resize: bool,
) -> None:
    """The "model ready" log names the RLE encoder and the preprocessing, and a service without one
    of the C extensions warns at start-up, naming it."""
    from fastapi.testclient import TestClient
    from service_helpers import settings_for

    from vitbench.service import preprocess
    from vitbench.service.app import create_app

    monkeypatch.setattr(masks, "NATIVE_RLE", rle)
    monkeypatch.setattr(preprocess, "NATIVE_PREPROCESS", resize)
    with (
        caplog.at_level(logging.INFO, logger="vitbench.service"),
        TestClient(create_app(settings_for(fake_model_dir), background_load=False)),
    ):
        pass
    ready = [r for r in caplog.records if r.getMessage() == "model ready"]
    assert [(getattr(r, "rle_encoder", None), getattr(r, "preprocess", None)) for r in ready] == [
        ("c" if rle else "numpy", "c" if resize else "numpy")
    ]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("vitbench.service._rle" in m for m in warned) is not rle
    assert any("vitbench.service._resize" in m for m in warned) is not resize
