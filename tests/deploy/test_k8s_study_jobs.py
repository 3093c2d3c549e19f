"""``bench status / logs / cancel`` see a study's pre-training Jobs next to its fine-tunings: status lists
them first as ``pretrain <method>``, ``logs --pretrain`` reads the pre-training pod, ``cancel --inits``
removes an init's pre-training with its fine-tuning; the fake API applies set-based label selectors."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from fake_k8s import NS, FakeCluster, _matches
from typer.testing import CliRunner


def _invoke(app: typer.Typer, *args: str) -> Any:
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 0, result.output
    return result


def test_pretraining_jobs_are_listed_logged_and_cancelled_with_the_study(
    app: typer.Typer, cluster: FakeCluster
) -> None:
    _invoke(app, "submit", "--pretrain", "mae", "--recipe", "tiny", "--study", "s1", "--gpus", "1")
    _invoke(app, "submit", "--study", "s1", "--inits", "random,mae", "--recipe", "bench-tiny", "--gpus", "1",
            "--weights", "mae=s1-mae@champion")  # fmt: skip
    cluster.add_pod(
        NS, "s1-pretrain-mae", "s1-pretrain-mae-x", "Running", log='{"iteration": 120, "type": "train"}\n'
    )
    cluster.add_pod(NS, "s1-mae", "s1-mae-y", "Pending", log="fine-tune log\n")

    rows = json.loads(_invoke(app, "status", "--json").output)
    assert [(r["name"], r["kind"]) for r in rows] == [
        ("s1-pretrain-mae", "pretraining"),
        ("s1-mae", "fine-tuning"),
        ("s1-random", "fine-tuning"),
    ]
    assert rows[0]["iteration"] == 120
    table = _invoke(app, "status").output
    assert "pretrain mae" in table and "random" in table

    assert _invoke(app, "logs", "mae", "--pretrain").output == '{"iteration": 120, "type": "train"}\n'
    assert _invoke(app, "logs", "mae").output == "fine-tune log\n"

    cancelled = json.loads(_invoke(app, "cancel", "--inits", "mae", "--yes", "--json").output)
    assert sorted(cancelled["deleted"]) == ["s1-mae", "s1-pretrain-mae"]
    left = json.loads(_invoke(app, "status", "--json").output)
    assert [r["name"] for r in left] == ["s1-random"]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("a=1,b in (x,y)", True),
        ("a=1,b in (y,z)", False),
        ("b notin (y,z)", True),
        ("a!=1", False),
        ("a==1,c", False),
        ("!c", True),
        ("a", True),
    ],
)
def test_fake_label_selectors_follow_kubernetes(selector: str, matches: bool) -> None:
    assert _matches({"a": "1", "b": "x"}, selector) is matches
