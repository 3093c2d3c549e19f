"""`vitbench data`, `train`, `eval`, `bench run|report` through the real command line app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny import TINY_SYNTH, sets
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.data.synth import generate_dataset

SETS = sets(max_iters=4, checkpoint_period=2, eval_period=2)
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clidata")
    generate_dataset(root, 10, seed=2, cfg=TINY_SYNTH)
    return root


def test_data_synth_and_check(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["data", "synth", "--out", str(tmp_path / "a"), "--images", "6", "--seed", "4", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {
        "out": str(tmp_path / "a"),
        "seed": 4,
        "train_images": 5,
        "val_images": 1,
    }
    runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "b"), "--images", "6", "--seed", "4"])
    a = (tmp_path / "a" / "annotations" / "instances_train.json").read_bytes()
    assert a == (tmp_path / "b" / "annotations" / "instances_train.json").read_bytes()
    res = runner.invoke(app, ["data", "check", "--data", str(tmp_path / "a")])
    assert res.exit_code == 0 and "no problems" in res.output


def _break(data: Path, tmp_path: Path) -> tuple[Path, int, int]:
    root = tmp_path / "bad"
    shutil.copytree(data, root)
    ann_file = root / "annotations" / "instances_train.json"
    coco = json.loads(ann_file.read_text())
    ann = next(a for a in coco["annotations"] if not a["iscrowd"])
    ann["category_id"] = 42
    ann_file.write_text(json.dumps(coco))
    return root, ann["image_id"], ann["id"]


def test_data_check_lists_problems_and_exits_1(data: Path, tmp_path: Path) -> None:
    root, image_id, ann_id = _break(data, tmp_path)
    res = runner.invoke(app, ["data", "check", "--data", str(root), "--json"])
    assert res.exit_code == 1
    problems = json.loads(res.stdout)["problems"]
    assert [(p["image_id"], p["annotation_id"]) for p in problems] == [(image_id, ann_id)]
    assert "category id 42" in problems[0]["message"]


def test_train_refuses_bad_data_before_training(data: Path, tmp_path: Path) -> None:
    root, image_id, ann_id = _break(data, tmp_path)
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        ["train", "--recipe", "bench-tiny", "--data", str(root), "--out", str(out), "--no-register", *SETS],
    )
    assert res.exit_code == 2
    assert f"image_id={image_id}" in res.output and f"annotation_id={ann_id}" in res.output
    assert "Traceback" not in res.output
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--recipe", "bench-tiyn"], "unknown recipe 'bench-tiyn'"),
        (["--recipe", "bench-tiny", "--set", "solver.lrr=1"], "unknown recipe key 'solver.lrr'"),
        (["--recipe", "bench-tiny", "--init", "mae"], "needs a weights file"),
        (
            ["--recipe", "bench-tiny", "--set", "solver.batch_size=3", "--set", "solver.grad_accum=2"],
            "divisible",
        ),
    ],
)
def test_train_user_mistakes_exit_2_without_traceback(
    data: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    res = runner.invoke(
        app, ["train", *args, "--data", str(data), "--out", str(tmp_path / "r"), "--no-register"]
    )
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_bench_run_report_and_eval(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITBENCH_WEIGHTS_MAE", raising=False)
    study = tmp_path / "study"
    res = runner.invoke(
        app,
        [
            "bench",
            "run",
            "--inits",
            "random,mae",
            "--recipe",
            "bench-tiny",
            "--data",
            str(data),
            "--out",
            str(study),
            "--no-register",
            "--no-progress",
            *SETS,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "skipping mae" in res.output and "VITBENCH_WEIGHTS_MAE" in " ".join(res.output.split())
    assert (
        (study / "study.md").is_file()
        and (study / "study.csv").is_file()
        and (study / "study_ap_vs_epoch.png").is_file()
    )
    lines = [json.loads(x) for x in (study / "random" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if x["type"] == "eval"] == [2, 4]  # periodic + final eval

    res = runner.invoke(app, ["bench", "report", "--out", str(study), "--json"])
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    assert [r["init"] for r in report["runs"]] == ["random"] and report["runs"][0]["iterations"] == 4

    ckpt = study / "random" / "model_final.pth"
    res = runner.invoke(
        app, ["eval", "--checkpoint", str(ckpt), "--data", str(data), "--device", "cpu", "--json"]
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)["metrics"]
    trained = json.loads((study / "random" / "eval.json").read_text())["metrics"]
    assert metrics == pytest.approx(trained, abs=1e-6)  # the same model gives the same AP when reloaded
    assert (study / "random" / "eval_val.json").is_file()

    res = runner.invoke(app, ["bench", "report", "--out", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no finished run" in res.output


def test_train_json_streams_records_that_bench_status_reads(data: Path, tmp_path: Path) -> None:
    """`train --json` (what the Jobs run): the result record on stdout, live records on stderr → progress."""
    from vitbench.deploy.k8s import parse_progress

    args = ["train", "--recipe", "bench-tiny", "--data", str(data), "--out", str(tmp_path / "r")]
    res = runner.invoke(app, [*args, *SETS, "--device", "cpu", "--no-register", "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    final = json.loads(res.stdout)
    assert final["type"] == "result" and final["schema"] == 1 and final["iteration"] == 4
    assert len(res.stdout.splitlines()) == 1  # one JSON line
    records = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    assert [r["iteration"] for r in records if r["type"] == "eval"] == [2, 4]
    assert records == [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    iteration, ap_box, _ = parse_progress(res.stderr)
    assert iteration == 4
    assert ap_box == final["metrics"]["bbox/AP"]
