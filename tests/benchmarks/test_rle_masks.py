"""``benchmarks/rle_masks.py --compare-with ROOT`` loads another checkout's ``service/masks.py`` beside this
one's and times both on the same masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from rle_masks import load_masks_module, median_ms  # noqa: E402

from vitbench.service.masks import rle_counts_many  # noqa: E402


def test_a_checkout_s_masks_module_loads_beside_this_one() -> None:
    compared = load_masks_module(ROOT)
    assert compared.__file__ != sys.modules["vitbench.service.masks"].__file__
    rng = np.random.default_rng(0)
    probs = rng.random((3, 28, 28)).astype(np.float32)
    boxes = np.array([[2, 3, 40, 30], [-5, 10, 20, 70], [30, 0, 64, 48]], np.float32)
    theirs = compared.rle_counts_many(probs, boxes, 48, 64)
    ours = rle_counts_many(probs, boxes, 48, 64)
    assert all(np.array_equal(a, b) for a, b in zip(theirs, ours, strict=True))


def test_a_checkout_without_the_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no service/masks\.py"):
        load_masks_module(tmp_path)


def test_median_ms_times_each_call() -> None:
    calls: list[int] = []
    times = median_ms([lambda: calls.append(1), lambda: calls.append(2)], repeats=3)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert calls == [1, 2] + [1, 2] * 3  # one warm-up each, then alternating
