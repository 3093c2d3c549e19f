"""The pre-training Job (``bench render|submit --pretrain``) and fine-tuning from a registered version.

The pre-training Job must behave like the fine-tuning Jobs (torchrun, Indexed Job + headless Service,
``--resume``, podFailurePolicy, registry env and label, read-only data, /dev/shm) while running
``vitbench pretrain``; submitting it twice must create nothing the second time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
import yaml
from fake_k8s import FakeCluster
from pydantic import ValidationError
from typer.testing import CliRunner

from vitbench.deploy.jobs import (
    REGISTRY_CLIENT_LABEL,
    PretrainJobSpec,
    StudySpec,
    is_registry_reference,
    render_pretraining,
    render_study,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate")

VERSIONS = ("1.30.0", "1.37.0")


def _pretrain(method: str = "mae", data: str = "/data/unlabeled", **kw: Any) -> PretrainJobSpec:
    base: dict[str, Any] = {"name": "pt", "recipe": "tiny", "inits": (method,), "gpus": 8}
    base.update(kw)
    return PretrainJobSpec(study=StudySpec(**base), init=method, data=data)


def _validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"nodes": 4},
        {"gpus": 0, "outputs_pvc": None, "outputs_s3": "s3://bucket/runs", "registry_secret": None},
        {"queue_name": "gpu-queue", "namespace": "ml"},
    ],
)
@pytest.mark.parametrize("method", ["mae", "supervised", "mocov3"])
def test_pretraining_job_passes_strict_schemas(method: str, kw: dict[str, Any]) -> None:
    _validate(render_pretraining(_pretrain(method, **kw)))


def test_single_node_pretraining_runs_vitbench_pretrain_with_resume_under_torchrun() -> None:
    (job,) = render_pretraining(_pretrain(overrides=("solver.epochs=10",)))
    assert job["metadata"]["name"] == "pt-pretrain-mae"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "pretraining"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cmd = container["command"]
    assert cmd[:2] == ["torchrun", "--standalone"] and "--nproc-per-node" in cmd
    run = cmd[cmd.index("vitbench.cli.main") + 1 :]
    assert run == [
        "pretrain", "--method", "mae", "--recipe", "tiny", "--data", "/data/unlabeled",
        "--out", "/outputs/pt/pretrain-mae", "--resume", "--no-progress", "--json",
        "--set", "solver.epochs=10",
    ]  # fmt: skip
    # No COCO preflight: the images need not be a COCO dataset.
    assert "initContainers" not in pod
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}} in rules
    assert any(
        r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules
    )
    assert job["spec"]["template"]["metadata"]["labels"][REGISTRY_CLIENT_LABEL] == "true"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]["name"] == "vitbench-registry"
    assert container["envFrom"] == [
        {"secretRef": {"name": "vitbench-registry-credentials", "optional": True}}
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["readOnly"] is True
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert "outputs" in volumes and "weights" not in volumes
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_multi_node_pretraining_is_indexed_job_with_headless_service() -> None:
    svc, job = render_pretraining(_pretrain(nodes=2))
    assert svc["kind"] == "Service" and svc["metadata"]["name"] == "pt-pretrain-mae"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "pt-pretrain-mae"}
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 3 * 2
    assert job["spec"]["template"]["spec"]["subdomain"] == "pt-pretrain-mae"
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--master-addr") + 1] == "pt-pretrain-mae-0.pt-pretrain-mae"
    assert cmd[cmd.index("--node-rank") + 1] == "$(NODE_RANK)"
    assert "--resume" in cmd


def test_single_gpu_pretraining_runs_vitbench_directly() -> None:
    (job,) = render_pretraining(_pretrain("supervised", data="/data/crops", gpus=1))
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:4] == ["vitbench", "pretrain", "--method", "supervised"]
    assert cmd[cmd.index("--out") + 1] == "/outputs/pt/pretrain-supervised"


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"method": "beit"}, "pre-training method 'beit'"),
        ({"data": "/etc"}, "must be a folder under /data"),
        ({"weights_pvc": "w"}, "takes no weights"),
        ({"name": "study-" + "x" * 30, "method": "supervised"}, "longer"),
    ],
)
def test_bad_pretraining_specs_are_refused(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        _pretrain(**kw)


def test_cli_render_pretrain_and_refusals(app: typer.Typer) -> None:
    from vitbench.cli.main import app as real_app

    args = ["bench", "render", "--pretrain", "mae", "--recipe", "tiny", "--study", "pt"]
    result = CliRunner().invoke(real_app, [*args, "--pretrain-data", "unlabeled", "--gpus", "8"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    _validate(docs)
    assert docs == render_pretraining(_pretrain())  # the CLI renders what the library renders
    for bad, needle in [
        (["--inits", "mae"], "--pretrain renders one pre-training Job"),
        (["--recipe", "huge"], "unknown pre-training recipe 'huge'"),
        (["--pretrain-data", "../x"], "must stay inside the data PVC"),
    ]:
        pytest.importorskip("vitbench.trainer.pretrain.recipes")
        out = CliRunner().invoke(app, [*args, *bad])
        assert out.exit_code == 2, out.output
        assert needle in " ".join(out.output.split()) and "Traceback" not in out.output


def test_submit_pretraining_twice_creates_nothing_the_second_time(
    app: typer.Typer, cluster: FakeCluster
) -> None:
    args = ["bench", "submit", "--pretrain", "mocov3", "--recipe", "tiny", "--study", "pt", "--nodes", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "kubectl logs" in first.output
    creates = [c for c in cluster.calls if c[0] == "create"]
    assert len(creates) == 2  # Service + Job
    second = CliRunner().invoke(app, [*args, "--json"])
    assert second.exit_code == 0, second.output
    assert {r["action"] for r in json.loads(second.output)} == {"unchanged"}
    assert [c for c in cluster.calls if c[0] == "create"] == creates
    changed = CliRunner().invoke(app, [*args, "--gpus", "4"])
    assert changed.exit_code == 1 and "conflict" in changed.output


@pytest.mark.parametrize(
    ("weights", "ref"),
    [
        ("mae-tiny@champion", True),
        ("mae-tiny/3", True),
        ("models:/mae-tiny@champion", True),
        ("/weights/mae_pretrain_vit_base.pth", False),
        ("s3://bucket/mae.pth", False),
        ("https://example.org/mae.pth", False),
        ("mae.pth", False),
    ],
)
def test_registry_references_are_told_from_paths_and_uris(weights: str, ref: bool) -> None:
    assert is_registry_reference(weights) is ref


def test_study_fine_tunes_from_a_registered_pretraining_without_a_weights_volume(
    app: typer.Typer, cluster: FakeCluster
) -> None:
    args = [
        "--inits",
        "random,mae",
        "--recipe",
        "bench-tiny",
        "--gpus",
        "1",
        "--weights",
        "mae=mae-tiny@champion",
    ]
    rendered = CliRunner().invoke(app, ["bench", "render", *args])
    assert rendered.exit_code == 0, rendered.output
    docs = list(yaml.safe_load_all(rendered.output))
    _validate(docs)
    mae = next(d for d in docs if d["metadata"]["name"] == "bench-tiny-mae")
    pod = mae["spec"]["template"]["spec"]
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--weights") + 1] == "mae-tiny@champion"  # the trainer resolves it in the pod
    assert "weights" not in {v["name"] for v in pod["volumes"]}
    assert mae["spec"]["template"]["metadata"]["labels"][REGISTRY_CLIENT_LABEL] == "true"
    submitted = CliRunner().invoke(app, ["bench", "submit", *args])
    assert submitted.exit_code == 0, submitted.output
    assert [c[0] for c in cluster.calls if c[0] == "create"] == ["create", "create"]
    assert docs == render_study(
        StudySpec(name="bench-tiny", recipe="bench-tiny", inits=("random", "mae"), gpus=1,
                  weights={"mae": "mae-tiny@champion"})
    )  # fmt: skip
