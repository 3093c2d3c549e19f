"""The Helm chart rendered by a real helm binary (``.tools/helm``, see scripts/install-helm.sh).

The chart's benchmark Jobs must have the same spec as ``deploy.jobs`` renders for the same settings, every
manifest must pass the strict 1.30/1.37 schemas, and values that break the schema must be refused.
"""

from __future__ import annotations

import base64
import json
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


# ---------------------------------------------------------------- registry authentication and pinning
REGISTRY_CLIENT = {"vitbench.io/registry-client": "true"}


def _by(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_default_mlflow_runs_basic_auth_with_credentials_from_secrets() -> None:
    docs = _template()
    pod = _by(docs, "Deployment", "-mlflow")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["command"][-2:] == ["--app-name", "basic-auth"]
    env = _env(server)
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/auth/basic_auth.ini"
    for var, key in (
        ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_TRACKING_USERNAME"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SERVER_SECRET_KEY"),
    ):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "vitbench-mlflow-admin", "key": key}
    # The ini is written by the init container (database URI from the Secret-fed env) into a memory emptyDir.
    (init,) = pod["initContainers"]
    assert _env(init)["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "vitbench-postgres"
    assert {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    ini = _by(docs, "ConfigMap", "-mlflow-auth")["data"]["basic_auth.ini"]
    assert "default_permission = NO_PERMISSIONS" in ini and "database_uri" not in ini

    # Generated credentials: one Secret per identity, the trainer's under registry.credentialsSecret.
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    assert sorted(secrets) == [
        "vitbench-mlflow-admin",
        "vitbench-mlflow-promoter",
        "vitbench-mlflow-service",
        "vitbench-registry-credentials",
    ]
    passwords = [s["data"]["MLFLOW_TRACKING_PASSWORD"] for s in secrets.values()]
    assert len(set(passwords)) == 4
    assert all(s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for s in secrets.values())
    rendered_config = yaml.safe_dump([d for d in docs if d["kind"] != "Secret"])
    for encoded in passwords:  # no password appears anywhere but in its Secret
        assert base64.b64decode(encoded).decode() not in rendered_config

    # The service reads the registry as its own read-only user; the Jobs as the trainer.
    api = _by(docs, "Deployment", "-api")["spec"]["template"]
    assert api["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "vitbench-mlflow-service"}}]
    assert api["metadata"]["labels"].items() >= REGISTRY_CLIENT.items()


def test_auth_hook_creates_users_with_separate_grants() -> None:
    docs = _template("--set", "mlflow.auth.models={coco-vitdet}")
    job = _by(docs, "Job", "-auth-users")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"].items() >= REGISTRY_CLIENT.items()
    env = _env(pod["spec"]["containers"][0])
    for who, secret in (
        ("MLFLOW_TRACKING", "vitbench-mlflow-admin"),
        ("TRAINER", "vitbench-registry-credentials"),
        ("PROMOTER", "vitbench-mlflow-promoter"),
        ("SERVICE", "vitbench-mlflow-service"),
    ):
        assert env[f"{who}_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == secret
    cm = _by(docs, "ConfigMap", "-mlflow-auth")["data"]
    assert cm["bootstrap.py"].strip() == (CHART / "files" / "mlflow-auth-bootstrap.py").read_text().strip()
    grants = {u["username_env"]: u["grants"] for u in json.loads(cm["plan.json"])["users"]}
    assert grants == {
        "TRAINER_USERNAME": [["experiment", "*", "EDIT"], ["registered_model", "coco-vitdet", "EDIT"]],
        "PROMOTER_USERNAME": [["experiment", "*", "READ"], ["registered_model", "coco-vitdet", "EDIT"]],
        "SERVICE_USERNAME": [["experiment", "*", "READ"], ["registered_model", "coco-vitdet", "READ"]],
    }


def test_mlflow_network_policy_admits_only_labelled_pods_and_the_allow_list() -> None:
    policy = _by(_template(), "NetworkPolicy", "-mlflow")
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": REGISTRY_CLIENT}}],
            "ports": [{"port": "http", "protocol": "TCP"}],
        }
    ]
    docs = _template("-f", str(CHART / "ci" / "external-db-values.yaml"))
    peers = _by(docs, "NetworkPolicy", "-mlflow")["spec"]["ingress"][0]["from"]
    assert peers[0] == {"podSelector": {"matchLabels": REGISTRY_CLIENT}}
    assert peers[1]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}
    # Every pod of the release that talks to MLflow carries the label: API, benchmark Jobs, auth hook, test.
    docs = _template("--set", "benchmark.enabled=true", "--set", "benchmark.inits={mae}")
    templates = {
        "api": _by(docs, "Deployment", "-api")["spec"]["template"],
        "benchmark": _by(docs, "Job", "bench-b-mae")["spec"]["template"],
        "auth hook": _by(docs, "Job", "-auth-users")["spec"]["template"],
        "helm test": _by(docs, "Pod", "-test-registry"),
    }
    for what, pod in templates.items():
        assert pod["metadata"]["labels"].items() >= REGISTRY_CLIENT.items(), what


def test_cli_rendered_jobs_carry_the_registry_client_label() -> None:
    (job,) = [
        d for d in render_study(StudySpec(name="s", recipe="bench-b", inits=("mae",))) if d["kind"] == "Job"
    ]
    assert job["spec"]["template"]["metadata"]["labels"].items() >= REGISTRY_CLIENT.items()


def test_pinned_service_and_existing_secrets() -> None:
    docs = _template("-f", str(CHART / "ci" / "external-db-values.yaml"))
    api = _by(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    env = _env(api)
    assert env["VITBENCH_MODEL"]["value"] == "coco-vitdet/3" and "coco-vitdet/3" in api["command"]
    assert env["VITBENCH_PIN_MODEL"]["value"] == "coco-vitdet/3"
    assert (
        env["VITBENCH_PIN_SHA256"]["value"]
        == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    assert api["envFrom"] == [{"secretRef": {"name": "mlflow-serving"}}]
    result = _helm("template", "vitbench", str(CHART), "--set", "api.pin.model=m/3", check=False)
    assert result.returncode != 0 and "api.pin.model and api.pin.sha256 go together" in result.stderr


def test_auth_can_be_turned_off() -> None:
    docs = _template("--set", "mlflow.auth.enabled=false")
    server = _by(docs, "Deployment", "-mlflow")["spec"]["template"]["spec"]
    assert "--app-name" not in server["containers"][0]["command"] and "initContainers" not in server
    assert not [d for d in docs if d["kind"] == "Secret" or d["metadata"]["name"].endswith("-auth-users")]
