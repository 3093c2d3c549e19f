"""``benchmarks/intra_op_threads.py`` times one ORT session per thread count on the service's input and
reports CPU and wall milliseconds per run, relative to the first count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "service"))

import intra_op_threads  # noqa: E402
from fake_detector import write_fake_model_dir  # noqa: E402


def test_one_row_per_thread_count_relative_to_the_first(tmp_path: Path) -> None:
    model_dir = write_fake_model_dir(tmp_path, size=64)
    rows = intra_op_threads.measure(model_dir, [1, 2], rounds=2, block=2)
    assert [r["intra_op_threads"] for r in rows] == [1, 2]
    assert all(r["cpu_ms_per_run"] > 0 and r["wall_ms_per_run"] > 0 for r in rows)
    assert rows[0]["cpu_vs_first"] == 1.0
    expected = rows[1]["cpu_ms_per_run"] / rows[0]["cpu_ms_per_run"]
    assert rows[1]["cpu_vs_first"] == pytest.approx(expected, rel=0.01)
