from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from vitbench.trainer.study import collect_runs, markdown_table, write_report


def _fake_run(root: Path, init: str, aps: list[float], wall: float) -> None:
    d = root / init
    d.mkdir(parents=True)
    (d / "recipe.json").write_text("{}")
    lines = [
        {"iteration": 10 * (i + 1), "epoch": 0.5 * (i + 1), "type": "eval", "bbox/AP": ap, "segm/AP": ap - 2}
        for i, ap in enumerate(aps)
    ]
    lines.insert(0, {"iteration": 5, "epoch": 0.25, "type": "train", "total_loss": 2.0})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"cut by kill')
    metrics = {
        "bbox/AP": aps[-1],
        "bbox/AP50": aps[-1] + 20,
        "bbox/AP75": aps[-1] - 5,
        "segm/AP": aps[-1] - 2,
    }
    ev = {
        "iteration": 10 * len(aps),
        "epoch": 0.5 * len(aps),
        "init": init,
        "recipe": "bench-tiny",
        "metrics": metrics,
        "wall_time_s": wall,
    }
    (d / "eval.json").write_text(json.dumps(ev))


def test_report_files(tmp_path: Path) -> None:
    _fake_run(tmp_path, "mae", [10.0, 30.0, 41.26], 120.0)
    _fake_run(tmp_path, "random", [5.0, 20.0], 60.0)
    (tmp_path / "beit").mkdir()
    (tmp_path / "beit" / "recipe.json").write_text("{}")  # started, not finished
    files = write_report(tmp_path)
    assert [r.init for r in files.runs] == ["random", "mae"]  # the paper's order
    assert files.unfinished == [tmp_path / "beit"]
    md = files.markdown.read_text()
    assert "| mae | bench-tiny | 41.3 | 39.3 | 61.3 | 36.3 | 1.50 | 30 | 2.00 |" in md
    rows = list(csv.DictReader(io.StringIO(files.csv.read_text())))
    assert rows[1]["init"] == "mae" and float(rows[1]["APbox"]) == pytest.approx(41.26)
    assert float(rows[0]["wall_time_min"]) == pytest.approx(1.0)
    with Image.open(files.plot) as im:
        assert im.format == "PNG" and im.size[0] > 500
    runs, _ = collect_runs(tmp_path)
    assert runs[1].curve == [(0.5, 10.0, 8.0), (1.0, 30.0, 28.0), (1.5, 41.26, 39.26)]


def test_missing_values_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no finished run"):
        write_report(tmp_path)
    _fake_run(tmp_path, "random", [5.0], 1.0)
    runs, _ = collect_runs(tmp_path)
    ev = json.loads((tmp_path / "random" / "eval.json").read_text())
    ev["metrics"].pop("segm/AP")
    (tmp_path / "random" / "eval.json").write_text(json.dumps(ev))
    runs, _ = collect_runs(tmp_path)
    assert "| random | bench-tiny | 5.0 | – |" in markdown_table(runs)
