"""The Helm chart rendered by a real helm binary (``.tools/helm``, see scripts/install-helm.sh).

The chart's benchmark Jobs must have the same spec as ``deploy.jobs`` renders for the same settings, every
manifest must pass the strict 1.30/1.37 schemas, and values that break the schema must be refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vitbench.deploy.jobs import StudySpec, render_study

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vitbench"
HELM = ROOT / ".tools" / "helm"
BAD_VALUES = sorted((Path(__file__).parent / "chart-values").glob("bad-*.yaml"))
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    helm = str(HELM) if HELM.exists() else shutil.which("helm")
    if helm is None:
        pytest.skip("helm not installed: bash scripts/install-helm.sh .tools")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(ROOT / ".helm/cache"),
        "HELM_CONFIG_HOME": str(ROOT / ".helm/config"),
        "HELM_DATA_HOME": str(ROOT / ".helm/data"),
    }
    return subprocess.run([helm, *args], capture_output=True, text=True, check=check, env=env, timeout=120)


def _template(*args: str) -> list[dict[str, Any]]:
    out = _helm("template", "vitbench", str(CHART), "--namespace", "ml", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_lint_strict_passes() -> None:
    result = _helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_ci_values_render_valid_manifests(values: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _template("-f", str(values))
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # CRD: no bundled schema
        for version in ("1.30.0", "1.37.0"):
            kubernetes_validate.validate(doc, version, strict=True)
        pod = _pod_spec(doc)
        if pod is not None:  # restricted pod security everywhere
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
                assert sc["capabilities"]["drop"] == ["ALL"]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    """The Job spec without labels (managed-by and helm.sh/chart differ by design)."""
    spec = dict(doc["spec"])
    spec["template"] = {"spec": doc["spec"]["template"]["spec"]}
    return spec


@pytest.mark.parametrize(
    ("values", "study_kw"),
    [
        (CHART / "ci" / "benchmark-values.yaml", {}),
        (CHART / "ci" / "multinode-values.yaml", {}),
    ],
    ids=["benchmark", "multinode"],
)
def test_chart_jobs_match_the_cli_rendering(values: Path, study_kw: dict[str, Any]) -> None:
    v = yaml.safe_load(values.read_text())["benchmark"]
    study = StudySpec(
        name=v.get("study") or v["recipe"],
        recipe=v["recipe"],
        inits=tuple(v["inits"]),
        gpus=v["gpus"],
        nodes=v.get("nodes", 1),
        outputs_s3=v.get("outputsS3"),
        weights_pvc=v.get("weightsPvc"),
        weights=v.get("weights", {}),
        overrides=tuple(v.get("overrides", ())),
        shm_size=v.get("shmSize", "16Gi"),
        memory=v.get("memory", "64Gi"),
        cpu=v.get("cpu", "8"),
        queue_name=v.get("queueName"),
        node_selector=v.get("nodeSelector", {}),
        **study_kw,
    )
    chart = {
        (d["kind"], d["metadata"]["name"]): d
        for d in _template("-f", str(values))
        if d["metadata"]["labels"].get("vitbench.io/study")
    }
    cli = {(d["kind"], d["metadata"]["name"]): d for d in render_study(study)}
    assert sorted(chart) == sorted(cli)  # helm orders by kind; the set of objects is the same
    for key, ours in cli.items():
        theirs = chart[key]
        if ours["kind"] == "Job":
            assert _strip(theirs) == _strip(ours), key
            assert (
                theirs["metadata"]["labels"]["vitbench.io/init"]
                == ours["metadata"]["labels"]["vitbench.io/init"]
            )
        else:
            assert theirs["spec"] == ours["spec"]


def test_benchmark_enabled_renders_one_job_per_init() -> None:
    docs = _template("--set", "benchmark.enabled=true", "--set", "benchmark.inits={random,mae,moby}")
    jobs = [d for d in docs if d["kind"] == "Job" and "vitbench.io/init" in d["metadata"]["labels"]]
    assert [j["metadata"]["name"] for j in jobs] == ["bench-b-random", "bench-b-mae", "bench-b-moby"]
    assert not [
        d for d in _template() if d["kind"] == "Job" and "vitbench.io/init" in d["metadata"]["labels"]
    ]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda p: p.stem)
def test_schema_breaking_values_are_refused_at_install(bad: Path) -> None:
    result = _helm("install", "vitbench", str(CHART), "--dry-run=client", "-f", str(bad), check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr


def test_mlflow_allows_its_service_dns_name_and_reads_secrets_by_reference() -> None:
    docs = _template("-f", str(CHART / "ci" / "external-db-values.yaml"))
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-mlflow"))
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "vitbench-mlflow.ml.svc.cluster.local:*" in hosts and "mlflow.example.internal:*" in hosts
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    assert (
        "$(DB_PASSWORD)@postgres.databases.svc.cluster.local:5432" in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    )
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "minio-credentials"
    assert not [d for d in docs if d["kind"] == "Secret"]  # secrets are referenced, never rendered
    hook = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].endswith("db-upgrade"))
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert hook["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["mlflow", "db", "upgrade"]
