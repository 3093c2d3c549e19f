"""Parameter counts (meta device) against the ViTDet figures, and the `vitbench model` / `recipes` CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitbench.cli.main import app
from vitbench.trainer.models.summary import summarize_recipe
from vitbench.trainer.recipes import get_recipe, list_recipes


@pytest.mark.parametrize(("recipe", "expected"), [("vitdet-b", 110.9e6), ("vitdet-l", 330.7e6)])
def test_vitdet_parameter_counts_match_detectron2(recipe: str, expected: float) -> None:
    info = summarize_recipe(get_recipe(recipe), num_classes=80)
    params = info["params"]
    assert abs(params["total"] - expected) / expected < 0.01
    assert params["total"] == sum(params[k] for k in ("backbone", "neck", "rpn", "roi_heads"))
    assert params["rpn"] == 1_184_015  # 2 3x3 convs + objectness + deltas, 3 anchors (d2 mask_rcnn_fpn.py)


def test_vitdet_b_component_counts() -> None:
    params = summarize_recipe(get_recipe("vitdet-b"))["params"]
    assert abs(params["backbone"] - 85.9e6) < 0.05e6
    assert params["neck"] == 5_560_000


def test_study_vit_b_count_matches_reported_reimplementation() -> None:
    # arXiv 2111.11429 §2: the study's ViT-B Mask R-CNN is ≈115.7M with pos_embed stored at 14x14 + cls.
    total = summarize_recipe(get_recipe("bench-b"))["params"]["total"]
    assert abs(total - 115.7e6) / 115.7e6 < 0.01


runner = CliRunner()


def test_cli_model_summary_json() -> None:
    result = runner.invoke(app, ["model", "summary", "--recipe", "vitdet-b", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info["params"]) == {"backbone", "neck", "rpn", "roi_heads", "total"}
    assert abs(info["params"]["total"] - 110.9e6) / 110.9e6 < 0.01
    assert info["strides"] == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert info["attention"] == {
        "window_size": 14,
        "global_blocks": [2, 5, 8, 11],
        "windowed_blocks": [0, 1, 3, 4, 6, 7, 9, 10],
        "rel_pos": "decomposed",
    }


def test_cli_model_summary_table_and_overrides() -> None:
    result = runner.invoke(
        app,
        [
            "model",
            "summary",
            "--recipe",
            "bench-tiny",
            "--set",
            "backbone.rel_pos=none",
            "--num-classes",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "total" in result.stdout and "rel-pos none" in result.stdout and "p6 /64" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "vitdet-x"], "unknown recipe 'vitdet-x'"),
        (["--recipe", "vitdet-b", "--set", "solver.lrr=1"], "Did you mean 'solver.lr'"),
        (["--recipe", "vitdet-b", "--set", "backbone.window_size=big"], "expected int"),
    ],
)
def test_cli_model_summary_user_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["model", "summary", *args])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_cli_recipes_lists_every_recipe() -> None:
    result = runner.invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    recipes = json.loads(result.stdout)
    assert [r["name"] for r in recipes] == list_recipes()
    assert recipes[0]["backbone"]["window_size"] == 14
    table = runner.invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and all(name in table.stdout for name in list_recipes())
