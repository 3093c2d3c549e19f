"""`vitbench inits` lists the catalog; `vitbench inits check` prints a LoadReport and sets the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from inits_formats import mae_file
from typer.testing import CliRunner

from vitbench.cli.main import app

runner = CliRunner()


def test_inits_lists_catalog_as_json_and_table() -> None:
    result = runner.invoke(app, ["inits", "--json"])
    assert result.exit_code == 0
    names = [e["name"] for e in json.loads(result.stdout)]
    assert names == ["random", "supervised", "mocov3", "beit", "mae", "mae_full", "moby", "detectron2"]
    table = runner.invoke(app, ["inits"])
    assert table.exit_code == 0 and "mocov3" in table.stdout and "0.5/0.5" in table.stdout


def test_check_ok_report_as_json(tmp_path: Path) -> None:
    torch.save(mae_file(96, 4), tmp_path / "mae.pth")
    result = runner.invoke(
        app,
        [
            "inits",
            "check",
            "--init",
            "mae",
            "--path",
            str(tmp_path / "mae.pth"),
            "--recipe",
            "bench-tiny",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["message"] == ""
    assert len(report["loaded"]) == 51 and report["resized"] == [
        "backbone.net.pos_embed: [1, 197, 96] -> [1, 17, 96]"
    ]
    human = runner.invoke(
        app,
        ["inits", "check", "--init", "mae", "--path", str(tmp_path / "mae.pth"), "--recipe", "bench-tiny"],
    )
    assert human.exit_code == 0 and "ok" in human.stdout and "rel_pos_window" in human.stdout


def test_check_not_ok_exits_1_with_first_mismatch(tmp_path: Path) -> None:
    torch.save(mae_file(192, 4), tmp_path / "wide.pth")
    result = runner.invoke(
        app,
        ["inits", "check", "--init", "mae", "--path", str(tmp_path / "wide.pth"), "--recipe", "bench-tiny"],
    )
    assert result.exit_code == 1
    assert "shape mismatch for backbone.net.pos_embed: checkpoint has [1, 17, 192]" in " ".join(
        result.stderr.split()
    )
    assert "Traceback" not in result.output


def test_check_user_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["--init", "nope", "--path", "x.pth", "--recipe", "bench-tiny"], "unknown init 'nope'"),
        (["--init", "mae", "--path", "x.pth", "--recipe", "bench-zz"], "unknown recipe 'bench-zz'"),
        (
            ["--init", "mae", "--path", str(tmp_path / "none.pth"), "--recipe", "bench-tiny"],
            "weights file not found",
        ),
        (["--init", "mae", "--path", str(tmp_path / "broken.pth"), "--recipe", "bench-tiny"], "truncated"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["inits", "check", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.stderr.split()) and "Traceback" not in result.output
