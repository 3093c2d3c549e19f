"""The chart's ``pretrain:`` values render the same pre-training Job as ``bench render --pretrain``, and a
study fine-tuning from a registered version renders the same Jobs as the CLI (real helm binary)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from test_k8s_chart import CHART, _strip, _template

from vitbench.deploy.jobs import DATA_MOUNT, PretrainJobSpec, StudySpec, render_pretraining, render_study

pytestmark = pytest.mark.integration

VALUES = CHART / "ci" / "pretrain-values.yaml"


def _chart_image() -> str:
    """The trainer image the chart uses by default (its repository at the chart's appVersion)."""
    repo = yaml.safe_load((CHART / "values.yaml").read_text())["benchmark"]["image"]["repository"]
    return f"{repo}:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"


def _by_key(docs: list[dict[str, Any]], component: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d["kind"], d["metadata"]["name"]): d
        for d in docs
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        and d["metadata"]["labels"].get("vitbench.io/study")
    }


def _compare(chart: dict[tuple[str, str], Any], cli: dict[tuple[str, str], Any]) -> None:
    assert sorted(chart) == sorted(cli)
    for key, ours in cli.items():
        theirs = chart[key]
        if ours["kind"] == "Job":
            assert _strip(theirs) == _strip(ours), key
            for label in ("vitbench.io/init", "vitbench.io/recipe", "app.kubernetes.io/component"):
                assert theirs["metadata"]["labels"][label] == ours["metadata"]["labels"][label]
        else:
            assert theirs["spec"] == ours["spec"]


def test_chart_pretraining_job_matches_the_cli_rendering() -> None:
    values = yaml.safe_load(VALUES.read_text())
    p, b = values["pretrain"], values["benchmark"]
    job = PretrainJobSpec(
        study=StudySpec(
            name=p.get("study") or p["recipe"],
            recipe=p["recipe"],
            inits=(p["method"],),
            gpus=p["gpus"],
            nodes=p["nodes"],
            overrides=tuple(p.get("overrides", ())),
            node_selector=b.get("nodeSelector", {}),
            image=_chart_image(),
        ),
        init=p["method"],
        data=f"{DATA_MOUNT}/{p['data']}",
    )
    docs = _template("-f", str(VALUES))
    cli = _by_key(render_pretraining(job), "pretraining")
    assert [k[0] for k in cli] == ["Service", "Job"]  # two nodes
    _compare(_by_key(docs, "pretraining"), cli)


def test_chart_study_fine_tunes_from_a_registry_reference_like_the_cli() -> None:
    b = yaml.safe_load(VALUES.read_text())["benchmark"]
    study = StudySpec(
        name=b["study"],
        recipe=b["recipe"],
        inits=tuple(b["inits"]),
        gpus=b["gpus"],
        weights=b["weights"],
        image=_chart_image(),
    )
    docs = _template("-f", str(VALUES))
    _compare(_by_key(docs, "benchmark"), _by_key(render_study(study), "benchmark"))
    mae = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "mae-study-mae")
    assert "weights" not in {v["name"] for v in mae["spec"]["template"]["spec"]["volumes"]}


def test_chart_pretraining_defaults_and_refusals() -> None:
    docs = _template("--set", "pretrain.enabled=true", "--set", "pretrain.data=/crops/", "--set",
                     "pretrain.method=supervised")  # fmt: skip
    (job,) = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "pretraining"]
    assert job["metadata"]["name"] == "b-pretrain-supervised"
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--data") + 1] == "/data/crops"
    assert "initContainers" not in job["spec"]["template"]["spec"]
    assert not [
        d for d in _template() if d["metadata"]["labels"].get("app.kubernetes.io/component") == "pretraining"
    ]
    from test_k8s_chart import _helm

    bad = _helm("template", "vitbench", str(CHART), "--set", "pretrain.enabled=true", "--set",
                "pretrain.data=a/../..", check=False)  # fmt: skip
    assert bad.returncode != 0 and "must stay inside the data PVC" in bad.stderr
