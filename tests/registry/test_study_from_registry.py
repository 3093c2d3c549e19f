"""``vitbench bench report --registry``: the study's table from registered versions and their runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.registry.client import RegistryClient
from vitbench.trainer.study import runs_from_registry

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VITBENCH_HOME", raising=False)


def _run(
    client: RegistryClient,
    name: str,
    ckpt: Path,
    init: str,
    recipe: str,
    box: list[float],
    mask: list[float],
) -> None:
    """A run as the registry hook logs it: eval metrics (percent) + epoch at each eval step."""
    run_id = client.start_run("study", f"{init}-{recipe}", {"init": init})
    for i, (b, m) in enumerate(zip(box, mask, strict=True), start=1):
        step = 100 * i
        metrics = {"bbox/AP": b, "segm/AP": m, "bbox/AP50": 2 * b, "bbox/AP75": b / 2, "epoch": 0.5 * i}
        client.log_metrics(run_id, metrics, step=step)
    client.register_version(name, run_id, ckpt, {"init": init, "recipe": recipe})
    client.end_run(run_id)


def test_rows_are_the_newest_version_per_init_in_paper_order(
    registry: RegistryClient, model_name: str, checkpoint: Path
) -> None:
    _run(registry, model_name, checkpoint, "mae", "bench-tiny", [3.0, 6.0], [2.0, 5.0])
    _run(registry, model_name, checkpoint, "random", "bench-tiny", [1.0, 4.0], [1.0, 3.5])
    _run(registry, model_name, checkpoint, "mae", "bench-tiny", [7.0, 9.5], [6.0, 8.25])  # newer mae
    _run(registry, model_name, checkpoint, "beit", "vitdet-tiny", [2.0], [1.0])  # other recipe

    runs = runs_from_registry(registry, [model_name], recipe="bench-tiny")
    assert [r.init for r in runs] == ["random", "mae"]
    random, mae = runs
    assert mae.source == f"{model_name}/3"
    assert (mae.row()["APbox"], mae.row()["APmask"], mae.row()["AP50"], mae.row()["AP75"]) == (
        9.5,
        8.25,
        19.0,
        4.75,
    )
    assert mae.curve == [(0.5, 7.0, 6.0), (1.0, 9.5, 8.25)]
    assert (mae.epochs, mae.iterations) == (1.0, 200)
    assert random.row()["APbox"] == 4.0 and random.wall_time_s >= 0.0

    every = runs_from_registry(registry, [model_name])
    assert [r.init for r in every] == ["random", "beit", "mae"]


def test_cli_report_from_registry_writes_table_csv_and_plot(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _run(registry, model_name, checkpoint, "random", "bench-tiny", [1.0, 2.0], [0.5, 1.5])
    _run(registry, model_name, checkpoint, "supervised", "bench-tiny", [2.0, 3.0], [1.0, 2.5])
    out = tmp_path / "study"
    args = ["bench", "report", "--registry", "--model", model_name, "--out", str(out)]
    res = runner.invoke(app, [*args, "--home", str(registry_home), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert [r["init"] for r in payload["runs"]] == ["random", "supervised"]
    assert payload["runs"][1]["APbox"] == 3.0
    table = (out / "study.md").read_text()
    assert "| supervised | bench-tiny | 3.0 | 2.5 |" in table
    assert (out / "study.csv").read_text().splitlines()[0].startswith("init,recipe,APbox")
    assert (out / "study_ap_vs_epoch.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_report_from_registry_with_no_match_exits_2(
    registry: RegistryClient, registry_home: Path, model_name: str, checkpoint: Path, tmp_path: Path
) -> None:
    _run(registry, model_name, checkpoint, "random", "bench-tiny", [1.0], [1.0])
    args = ["bench", "report", "--registry", "--model", model_name, "--recipe", "vitdet-l"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--home", str(registry_home)])
    assert res.exit_code == 2
    assert "nothing to report" in res.output
    assert not (tmp_path / "s").exists()
