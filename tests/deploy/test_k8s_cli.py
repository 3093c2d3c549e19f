"""``vitbench bench render|submit|status|logs|cancel`` end to end, the cluster replaced by the fake API."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
import yaml
from fake_k8s import NS, FakeCluster
from typer.testing import CliRunner

from vitbench.cli import bench_k8s

kubernetes_validate = pytest.importorskip("kubernetes_validate")

FIVE = "random,supervised,mocov3,beit,mae"
#: Every init but random needs weights; these come from a weights PVC.
W_MAE = ["--weights-pvc", "pretrained", "--weights", "mae=/weights/mae.pth"]
W_FIVE = [
    *W_MAE,
    *(a for i in ("supervised", "mocov3", "beit") for a in ("--weights", f"{i}=/weights/{i}.pth")),
]


def _run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_render_prints_five_valid_jobs_with_gpu_shm_and_failure_policy(app: typer.Typer) -> None:
    from vitbench.cli.main import app as real_app  # the command users type

    result = _run(real_app, "bench", "render", "--inits", FIVE, "--recipe", "bench-b", *W_FIVE, "--gpus", "8")
    assert result.exit_code == 0, result.output
    assert "&id" not in result.output  # plain YAML, no anchors
    docs = list(yaml.safe_load_all(result.output))
    assert [d["kind"] for d in docs] == ["Job"] * 5
    for doc in docs:
        for version in ("1.30.0", "1.37.0"):
            kubernetes_validate.validate(doc, version, strict=True)
        pod = doc["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
        assert doc["spec"]["podFailurePolicy"]["rules"]


def test_render_two_nodes_gives_indexed_job_and_headless_service(app: typer.Typer) -> None:
    result = _run(
        app, "bench", "render", "--inits", "mae", "--recipe", "bench-b", *W_MAE, "--gpus", "8", "--nodes", "2"
    )
    assert result.exit_code == 0, result.output
    svc, job = yaml.safe_load_all(result.output)
    assert svc["kind"] == "Service" and svc["spec"]["clusterIP"] == "None"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert "$(NODE_RANK)" in job["spec"]["template"]["spec"]["containers"][0]["command"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--inits", "mae,dino", "--recipe", "bench-b"], "unknown init(s) dino"),
        (["--inits", "mae", "--recipe", "bench-zz"], "unknown recipe 'bench-zz'"),
        (["--inits", "mae", "--recipe", "bench-b", "--shm-size", "lots"], "shm_size"),
        (["--inits", "mae", "--recipe", "bench-b", "--weights", "mae"], "KEY=VALUE"),
        (["--inits", "mae", "--recipe", "bench-b", "--gpus", "-1"], "--gpus"),
        (["--inits", "random,mae", "--recipe", "bench-b"], "init 'mae' needs pretrained weights"),
        (
            ["--inits", "mae", "--recipe", "bench-b", "--weights", "mae=/weights/x.pth"],
            "point at /weights/x.pth, but no weights volume is mounted",
        ),
        (
            ["--inits", "mae", "--recipe", "bench-b", "--weights", "mae=x.pth", "--weights-pvc", "w"],
            "(x.pth) are not a path inside the pod",
        ),
        (["--inits", "moby", "--recipe", "bench-b", "--weights", "moby=s3://b/m.pth"], "does not apply"),
        (["--inits", "random", "--recipe", "bench-b", "--set", "solver.lr=abc"], "'abc' for 'solver.lr'"),
        (
            ["--inits", "random", "--recipe", "bench-b", "--set", "solver.max_iters=-5"],
            "'-5' for 'solver.max_iters': expected int (Input should be greater than 0)",
        ),
        (["--inits", "random", "--recipe", "bench-b", "--set", "solver.lrr=1"], "unknown recipe key"),
    ],
)
def test_render_refuses_bad_input_with_exit_2_and_no_traceback(
    app: typer.Typer, args: list[str], needle: str
) -> None:
    pytest.importorskip("vitbench.trainer.recipes")
    result = CliRunner().invoke(app, ["bench", "render", *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_submit_refuses_a_study_whose_runs_cannot_start(app: typer.Typer, cluster: FakeCluster) -> None:
    """Checked before anything reaches the cluster: no Job is created for a run that would fail."""
    result = CliRunner().invoke(app, ["bench", "submit", "--inits", "random,mae", "--recipe", "bench-b"])
    assert result.exit_code == 2 and "init 'mae' needs pretrained weights" in result.output
    assert "Traceback" not in result.output
    assert not [c for c in cluster.calls if c[0] == "create"]


def test_submit_twice_second_creates_nothing_and_says_so(app: typer.Typer, cluster: FakeCluster) -> None:
    args = [
        "bench",
        "submit",
        "--inits",
        "random,mae",
        "--recipe",
        "bench-b",
        *W_MAE,
        "--gpus",
        "8",
        "--nodes",
        "2",
    ]
    first = _run(app, *args)
    assert first.exit_code == 0, first.output
    assert first.output.count("created") >= 4
    creates = [c for c in cluster.calls if c[0] == "create"]
    second = _run(app, *args)
    assert second.exit_code == 0, second.output
    assert "nothing new created" in second.output
    assert [c for c in cluster.calls if c[0] == "create"] == creates
    as_json = json.loads(_run(app, *args, "--json").output)
    assert {r["action"] for r in as_json} == {"unchanged"}


def test_submit_changed_spec_is_a_conflict_with_exit_1(app: typer.Typer, cluster: FakeCluster) -> None:
    _run(app, "bench", "submit", "--inits", "mae", "--recipe", "bench-b", *W_MAE, "--gpus", "8")
    result = CliRunner().invoke(
        app, ["bench", "submit", "--inits", "mae", "--recipe", "bench-b", *W_MAE, "--gpus", "4"]
    )
    assert result.exit_code == 1
    assert "conflict" in result.output and "different spec" in result.output


def test_status_shows_preempted_job_as_retried_not_failed(app: typer.Typer, cluster: FakeCluster) -> None:
    _run(app, "bench", "submit", "--inits", "random,mae", "--recipe", "bench-b", *W_MAE, "--gpus", "8")
    cluster.set_job_status(NS, "bench-b-mae", active=1, failed=1)
    cluster.add_pod(
        NS, "bench-b-mae", "m1", "Failed", disruption_reason="PreemptionByScheduler", exit_code=137
    )
    eval_line = json.dumps({"iteration": 4000, "type": "eval", "bbox/AP": 40.25, "segm/AP": 35.5})
    cluster.add_pod(NS, "bench-b-mae", "m2", "Running", log=eval_line + "\n")
    result = _run(app, "bench", "status", "--json")
    rows = {r["init"]: r for r in json.loads(result.output)}
    assert rows["mae"]["phase"] == "Running"
    assert (rows["mae"]["retried"], rows["mae"]["failed"]) == (1, 0)
    assert (rows["mae"]["iteration"], rows["mae"]["ap_box"]) == (4000, 40.25)
    assert rows["random"]["phase"] == "Pending"

    table = CliRunner().invoke(app, ["bench", "status"], env={"COLUMNS": "120"}).output
    assert "study bench-b in research" in table
    mae_line = next(line for line in table.splitlines() if " mae " in line)
    assert mae_line.split() == ["mae", "Running", "1/2", "1", "(preempted)", "0", "4,000", "40.2", "35.5"]
    assert "Failed" not in mae_line


def test_status_watch_refreshes_until_every_job_finished(
    app: typer.Typer, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    _run(app, "bench", "submit", "--inits", "mae", "--recipe", "bench-b", *W_MAE)
    cluster.set_job_status(NS, "bench-b-mae", active=1)
    sleeps: list[float] = []

    def finish_during_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        cluster.set_job_status(
            NS, "bench-b-mae", succeeded=1, conditions=[{"type": "Complete", "status": "True"}]
        )

    monkeypatch.setattr(time, "sleep", finish_during_sleep)
    result = CliRunner().invoke(app, ["bench", "status", "--watch", "5"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert sleeps == [5.0]
    assert "Succeeded" in result.output


def test_logs_and_cancel(app: typer.Typer, cluster: FakeCluster) -> None:
    _run(app, "bench", "submit", "--inits", "random,mae", "--recipe", "bench-b", *W_MAE)
    cluster.add_pod(NS, "bench-b-mae", "m", "Running", log="step 1\nstep 2\n")
    assert _run(app, "bench", "logs", "mae").output == "step 1\nstep 2\n"
    assert _run(app, "bench", "logs", "mae", "--tail", "1").output == "step 2\n"
    assert _run(app, "bench", "logs", "mae", "--follow").output == "step 1\nstep 2\n"
    missing = CliRunner().invoke(app, ["bench", "logs", "moby"])
    assert missing.exit_code == 2 and "has init 'moby'" in missing.output

    refused = CliRunner().invoke(app, ["bench", "cancel"], input="n\n")
    assert refused.exit_code == 1 and len(cluster.jobs) == 2
    out = json.loads(_run(app, "bench", "cancel", "--inits", "mae", "--yes", "--json").output)
    assert out == {"namespace": NS, "study": "bench-b", "deleted": ["bench-b-mae"]}
    assert list(cluster.jobs) == [(NS, "bench-b-random")]
    assert "deleted" in _run(app, "bench", "cancel", "-y").output
    assert cluster.jobs == {}


def test_connect_reads_the_kubeconfig_context_namespace(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "gpu", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
                    {"name": "plain", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "gpu",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    batch, core, ns = bench_k8s.connect(None, None)
    assert isinstance(batch, client.BatchV1Api) and isinstance(core, client.CoreV1Api)
    assert ns == "team-a"
    assert bench_k8s.connect("plain", None)[2] == "default"
    assert bench_k8s.connect(None, "other")[2] == "other"


def test_commands_without_a_cluster_config_exit_2_with_a_hint(
    app: typer.Typer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(app, ["bench", "status"])
    assert result.exit_code == 2
    assert "no Kubernetes configuration" in result.output and "bench render" in result.output
