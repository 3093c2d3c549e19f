"""Rendering of the study's Jobs: schema validity (1.30 and 1.37, strict) and the behaviour they encode."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vitbench.deploy.jobs import (
    CONFIG_ERROR_EXIT_CODE,
    StudySpec,
    Toleration,
    container_command,
    render_job,
    render_study,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate")

FIVE = ("random", "supervised", "mocov3", "beit", "mae")
VERSIONS = ("1.30.0", "1.37.0")


def _study(**kw: Any) -> StudySpec:
    base: dict[str, Any] = {"name": "bench-b", "recipe": "bench-b", "inits": FIVE, "gpus": 8}
    base.update(kw)
    return StudySpec(**base)


def _validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"nodes": 2},
        {"gpus": 0, "outputs_pvc": None, "outputs_s3": "s3://bucket/runs", "registry_secret": None},
        {"queue_name": "gpu-queue", "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        {
            "weights_pvc": "weights",
            "weights": {"mae": "/weights/mae_pretrain_vit_base.pth"},
            "namespace": "ml",
        },
        {"tolerations": (Toleration(key="dedicated", operator="Equal", value="ml"),), "gpus": 1},
    ],
)
def test_every_variant_passes_strict_schemas(kw: dict[str, Any]) -> None:
    _validate(render_study(_study(**kw)))


def test_single_node_study_has_one_job_per_init_with_gpu_shm_and_failure_policy() -> None:
    docs = render_study(_study())
    assert [d["kind"] for d in docs] == ["Job"] * 5
    assert [d["metadata"]["name"] for d in docs] == [f"bench-b-{i}" for i in FIVE]
    for init, job in zip(FIVE, docs, strict=True):
        spec = job["spec"]
        pod = spec["template"]["spec"]
        c = _container(job)
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        data = next(v for v in pod["volumes"] if v["name"] == "data")
        assert data["persistentVolumeClaim"]["readOnly"] is True
        assert {"name": "data", "mountPath": "/data", "readOnly": True} in c["volumeMounts"]
        assert pod["restartPolicy"] == "Never"
        assert 0 < spec["backoffLimit"] <= 6
        rules = spec["podFailurePolicy"]["rules"]
        assert {
            "action": "FailJob",
            "onExitCodes": {"operator": "In", "values": [CONFIG_ERROR_EXIT_CODE]},
        } in rules
        assert {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        } in rules
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
        assert "completionMode" not in spec and "suspend" not in spec
        # One node with 8 GPUs: torchrun standalone, resuming into the study's output folder.
        cmd = c["command"]
        assert cmd[:2] == ["torchrun", "--standalone"]
        assert cmd[cmd.index("--nproc-per-node") + 1] == "8"
        tail = cmd[cmd.index("-m") + 1 :]
        assert tail == [
            "vitbench.cli.main",
            "train",
            "--recipe",
            "bench-b",
            "--init",
            init,
            "--data",
            "/data",
            "--out",
            f"/outputs/bench-b/{init}",
            "--resume",
            "--json",
        ]
        labels = job["metadata"]["labels"]
        assert labels["vitbench.io/study"] == "bench-b" and labels["vitbench.io/init"] == init
        assert labels["app.kubernetes.io/name"] == "vitbench"
        assert spec["template"]["metadata"]["labels"]["vitbench.io/init"] == init


def test_registry_address_from_configmap_and_credentials_from_secret() -> None:
    c = _container(render_job(_study().jobs()[0]))
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"] == {
        "configMapKeyRef": {"name": "vitbench-registry", "key": "MLFLOW_TRACKING_URI"}
    }
    assert c["envFrom"] == [{"secretRef": {"name": "vitbench-registry-credentials", "optional": True}}]
    assert not any("value" in e and "SECRET" in e["name"] for e in c["env"])


def test_restricted_pod_security() -> None:
    job = render_job(_study().jobs()[0])
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(job)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in _container(job)["volumeMounts"]


def test_multi_node_is_indexed_job_with_headless_service_and_rank_from_completion_index() -> None:
    docs = render_study(_study(inits=("mae",), nodes=2))
    assert [d["kind"] for d in docs] == ["Service", "Job"]
    svc, job = docs
    assert svc["metadata"]["name"] == "bench-b-mae"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "bench-b-mae"}
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimit"] == 3 * 2  # per node: one crash fails every rank
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "bench-b-mae"
    c = _container(job)
    rank_env = next(e for e in c["env"] if e["name"] == "NODE_RANK")
    assert rank_env["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    cmd = c["command"]
    assert cmd[0] == "torchrun"
    assert cmd[cmd.index("--nnodes") + 1] == "2"
    assert cmd[cmd.index("--nproc-per-node") + 1] == "8"
    assert cmd[cmd.index("--node-rank") + 1] == "$(NODE_RANK)"
    assert cmd[cmd.index("--master-addr") + 1] == "bench-b-mae-0.bench-b-mae"
    # torchrun hides the worker's exit code: the preflight init container checks the data first.
    assert pod["initContainers"][0]["command"] == [
        "vitbench",
        "data",
        "check",
        "--data",
        "/data",
        "--no-decode",
    ]
    # ...and a failed check (exit 1 or 2) ends the Job instead of retrying against the same dataset.
    assert {
        "action": "FailJob",
        "onExitCodes": {"containerName": "preflight", "operator": "In", "values": [1, 2]},
    } in spec["podFailurePolicy"]["rules"]


def test_single_gpu_runs_vitbench_directly_so_exit_code_2_reaches_the_policy() -> None:
    job = render_job(_study(gpus=1).jobs()[0])
    assert _container(job)["command"][:2] == ["vitbench", "train"]
    assert "initContainers" not in job["spec"]["template"]["spec"]


def test_kueue_label_suspends_the_job() -> None:
    job = render_job(_study(queue_name="team-a").jobs()[0])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True


def test_s3_outputs_and_weights_and_overrides_reach_the_trainer() -> None:
    study = _study(
        gpus=1,
        outputs_s3="s3://runs/vitbench/",
        weights={"mae": "/weights/mae.pth"},
        weights_pvc="pretrained",
        overrides=("solver.lr=1e-4",),
    )
    job = next(j for j in study.jobs() if j.init == "mae")
    cmd = container_command(job)
    assert cmd[cmd.index("--out") + 1] == "s3://runs/vitbench/bench-b/mae"
    assert cmd[cmd.index("--weights") + 1] == "/weights/mae.pth"
    assert cmd[cmd.index("--set") + 1] == "solver.lr=1e-4"
    volumes = render_job(job)["spec"]["template"]["spec"]["volumes"]
    assert "outputs" not in [v["name"] for v in volumes]
    assert {
        "name": "weights",
        "persistentVolumeClaim": {"claimName": "pretrained", "readOnly": True},
    } in volumes


def test_rendering_is_deterministic() -> None:
    assert render_study(_study(nodes=2)) == render_study(_study(nodes=2))
    a = render_job(_study().jobs()[0])["metadata"]["annotations"]["vitbench.io/spec-hash"]
    b = render_job(_study(gpus=4).jobs()[0])["metadata"]["annotations"]["vitbench.io/spec-hash"]
    assert a != b


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"inits": ("mae", "dino")}, "unknown init(s) dino"),
        ({"inits": ()}, "at least one"),
        ({"inits": ("mae", "mae")}, "twice"),
        ({"name": "Bench_B"}, "DNS label"),
        ({"gpus": -1}, "greater than or equal to 0"),
        ({"nodes": 0}, "greater than or equal to 1"),
        ({"shm_size": "lots"}, "not a Kubernetes quantity"),
        ({"outputs_pvc": None}, "outputs need a place"),
        ({"shm_size": "64Gi", "memory": "32Gi"}, "must be smaller than memory"),
        ({"outputs_s3": "http://bucket"}, "s3://bucket/prefix"),
        ({"weights": {"beit": "x"}, "inits": ("mae",)}, "not in the study"),
        ({"name": "a" * 45, "inits": ("supervised",)}, "longer than 52"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_specs_are_refused_with_a_message_naming_the_field(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=None) as err:
        _study(**kw)
    assert needle in str(err.value)


def test_quantity_bytes() -> None:
    from vitbench.deploy.jobs import quantity_bytes

    assert quantity_bytes("16Gi") == 16 * 2**30
    assert quantity_bytes("500M") == 500e6
    assert quantity_bytes("1.5Ki") == 1536
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity_bytes("12 GB")


def test_init_names_come_from_the_catalog() -> None:
    """Jobs, the study and the chart's schema accept exactly the catalog's init names."""
    import json
    from pathlib import Path

    from vitbench.deploy.jobs import KNOWN_INITS
    from vitbench.trainer.inits.catalog import list_inits
    from vitbench.trainer.study import INIT_ORDER

    assert list(KNOWN_INITS) == list(INIT_ORDER) == list_inits()
    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "helm" / "vitbench" / "values.schema.json").read_text()
    )
    enums: list[list[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "random" in node.get("enum", []):
                enums.append(node["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert len(enums) == 2  # benchmark.inits items and benchmark.weights keys
    assert all(e == list_inits() for e in enums), enums
