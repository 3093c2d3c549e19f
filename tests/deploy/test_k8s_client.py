"""The Job client against an in-memory fake of the API server returning real ``kubernetes.client`` models."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fake_k8s import FakeBatchApi, FakeCluster, FakeCoreApi
from kubernetes.client.exceptions import ApiException

from vitbench.deploy import k8s
from vitbench.deploy.jobs import StudySpec, render_study
from vitbench.trainer import records

NS = "ml"


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def apis(cluster: FakeCluster) -> tuple[FakeBatchApi, FakeCoreApi]:
    return FakeBatchApi(cluster), FakeCoreApi(cluster)


def _study(**kw: Any) -> StudySpec:
    args: dict[str, Any] = {"name": "s1", "recipe": "bench-b", "inits": ("random", "mae"), "gpus": 8, **kw}
    return StudySpec(**args)


def test_submit_twice_creates_nothing_the_second_time(
    cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]
) -> None:
    batch, core = apis
    docs = render_study(_study(nodes=2))
    first = k8s.submit(docs, batch, core, NS)
    assert [(r.kind, r.name, r.action) for r in first] == [
        ("Service", "s1-random", "created"),
        ("Job", "s1-random", "created"),
        ("Service", "s1-mae", "created"),
        ("Job", "s1-mae", "created"),
    ]
    calls_after_first = list(cluster.calls)
    second = k8s.submit(render_study(_study(nodes=2)), batch, core, NS)
    assert {r.action for r in second} == {"unchanged"}
    assert cluster.calls == calls_after_first  # nothing new created
    assert len(cluster.jobs) == 2 and len(cluster.services) == 2
    # The created objects live in the requested namespace even though the manifests had none.
    meta = cluster.jobs[(NS, "s1-mae")].metadata
    assert meta is not None and meta.namespace == NS
    # Each headless Service is owned by its Job, so it is garbage-collected with it.
    svc_meta = cluster.services[(NS, "s1-mae")].metadata
    assert svc_meta is not None and svc_meta.owner_references is not None
    (owner,) = svc_meta.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", "s1-mae", meta.uid)


def test_submit_with_a_changed_spec_reports_conflict_and_leaves_the_job(
    cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]
) -> None:
    batch, core = apis
    k8s.submit(render_study(_study()), batch, core, NS)
    before = cluster.jobs[(NS, "s1-mae")]
    results = k8s.submit(render_study(_study(gpus=4)), batch, core, NS)
    assert [r.action for r in results] == ["conflict", "conflict"]
    assert "cancel" in results[0].detail
    assert cluster.jobs[(NS, "s1-mae")] is before


def test_submit_treats_a_create_race_409_as_existing(apis: tuple[FakeBatchApi, FakeCoreApi]) -> None:
    batch, core = apis
    docs = render_study(_study())
    original_read = batch.read_namespaced_job
    seen: list[str] = []

    def racing_read(name: str, namespace: str, **kw: object) -> object:
        if name not in seen:  # first read: someone else has not created it yet...
            seen.append(name)
            batch.create_namespaced_job(namespace, {**docs[0], "metadata": dict(docs[0]["metadata"])})
            raise ApiException(status=404, reason="NotFound")
        return original_read(name, namespace)

    batch.read_namespaced_job = racing_read  # type: ignore[method-assign,assignment]
    results = k8s.submit(docs[:1], batch, core, NS)
    assert [r.action for r in results] == ["unchanged"]


def test_submit_surfaces_permission_errors_clearly(apis: tuple[FakeBatchApi, FakeCoreApi]) -> None:
    batch, core = apis

    def forbidden(namespace: str, body: object, **kw: object) -> None:
        raise ApiException(status=403, reason="Forbidden")

    batch.create_namespaced_job = forbidden  # type: ignore[method-assign,assignment]
    with pytest.raises(k8s.K8sError, match=r"creating Job ml/s1-random failed: HTTP 403 .*Role"):
        k8s.submit(render_study(_study()), batch, core, NS)


def test_preempted_pod_counts_as_retried_not_failed(
    cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]
) -> None:
    batch, core = apis
    k8s.submit(render_study(_study()), batch, core, NS)
    # mae: preempted once (DisruptionTarget), replaced by a pod that resumed and is training.
    cluster.set_job_status(NS, "s1-mae", active=1, failed=1)
    cluster.add_pod(
        NS, "s1-mae", "s1-mae-a", "Failed", disruption_reason="PreemptionByScheduler", exit_code=137
    )
    log = "\n".join(
        [
            json.dumps({"iteration": 5000, "epoch": 1.2, "type": "eval", "bbox/AP": 31.5, "segm/AP": 28.25}),
            "some warning",
            json.dumps({"iteration": 5100, "epoch": 1.3, "type": "train", "loss": 1.1}),
        ]
    )
    cluster.add_pod(NS, "s1-mae", "s1-mae-b", "Running", log=log)
    # random: a real crash (OOM) uses up a retry and counts as failed.
    cluster.set_job_status(NS, "s1-random", active=1, failed=1)
    cluster.add_pod(NS, "s1-random", "s1-random-a", "Failed", exit_code=137)
    cluster.add_pod(NS, "s1-random", "s1-random-b", "Running")

    by_init = {s.init: s for s in k8s.study_status(batch, core, NS, "s1")}
    mae = by_init["mae"]
    assert mae.phase == "Running"
    assert (mae.retried, mae.failed) == (1, 0)
    assert (mae.iteration, mae.ap_box, mae.ap_mask) == (5100, 31.5, 28.25)
    assert [p.disrupted for p in mae.pods] == [True, False]
    assert mae.pods[0].reason == "PreemptionByScheduler"
    rnd = by_init["random"]
    assert (rnd.retried, rnd.failed) == (0, 1)


def test_terminal_and_queued_phases(cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]) -> None:
    batch, core = apis
    k8s.submit(render_study(_study(queue_name="q")), batch, core, NS)
    assert {s.phase for s in k8s.study_status(batch, core, NS, "s1")} == {"Queued"}
    cluster.set_job_status(
        NS, "s1-mae", conditions=[{"type": "Complete", "status": "True", "reason": "Completed"}], succeeded=1
    )
    cluster.set_job_status(
        NS,
        "s1-random",
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "exit code 2 in trainer",
            }
        ],
    )
    # Suspension no longer matters once the Job has a terminal condition.
    by_init = {s.init: s for s in k8s.study_status(batch, core, NS)}
    assert by_init["mae"].phase == "Succeeded"
    assert by_init["random"].phase == "Failed"
    assert "exit code 2" in by_init["random"].message


def test_progress_from_pod_annotations_wins_over_logs(
    cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]
) -> None:
    batch, core = apis
    k8s.submit(render_study(_study(nodes=2)), batch, core, NS)
    cluster.add_pod(
        NS,
        "s1-mae",
        "s1-mae-0-x",
        "Running",
        index=0,
        annotations={"vitbench.io/iteration": "700", "vitbench.io/ap-box": "12.5"},
        log=json.dumps({"iteration": 1}),
    )
    cluster.add_pod(NS, "s1-mae", "s1-mae-1-y", "Running", index=1, log=json.dumps({"iteration": 999}))
    mae = next(s for s in k8s.study_status(batch, core, NS) if s.init == "mae")
    assert (mae.iteration, mae.ap_box, mae.ap_mask) == (700, 12.5, None)
    assert [p.index for p in mae.pods] == [0, 1]


def test_parse_progress_skips_noise_and_takes_newest() -> None:
    text = "\n".join(
        [
            json.dumps({"type": "eval", "iteration": 10, "bbox/AP": 1.0, "segm/AP": 0.5}),
            json.dumps({"type": "eval", "iteration": 20, "bbox/AP": 2.0}),
            "{not json",
            "[1, 2]",
            json.dumps({"iteration": 25, "bbox/AP": 9.0}),  # no type: not a train record
            json.dumps({"type": "train", "iteration": 30, "loss": 0.1}),
            "Epoch 3 ━━━━━━━━ 30/100",
        ]
    )
    assert k8s.parse_progress(text) == (30, 2.0, None)
    assert k8s.parse_progress("") == (None, None, None)


def test_parse_progress_reads_the_final_result_record() -> None:
    # What `vitbench train --json` prints last (one line on stdout), after the progress bar and records.
    result = records.result_record(90000, {"bbox/AP": 50.25, "segm/AP": 44.5}, 1.0)
    text = "\n".join(
        [
            json.dumps({"type": "train", "iteration": 89990, "loss": 0.3}),
            "train ━━━━ 90000/90000",
            records.dumps(result),
        ]
    )
    assert k8s.parse_progress(text + "\n") == (90000, 50.25, 44.5)
    # A result line cut while being written is skipped: the last complete record wins.
    assert k8s.parse_progress(text[:-5]) == (89990, None, None)
    # A result of a newer schema this reader does not know is skipped too.
    newer = records.dumps({**result, "schema": records.SCHEMA + 1})
    assert k8s.parse_progress(text.rsplit("\n", 1)[0] + "\n" + newer) == (89990, None, None)


def test_logs_read_the_newest_rank0_pod(cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]) -> None:
    batch, core = apis
    k8s.submit(render_study(_study(nodes=2)), batch, core, NS)
    cluster.add_pod(
        NS, "s1-mae", "old", "Failed", index=0, disruption_reason="EvictionByEvictionAPI", log="old\n"
    )
    cluster.add_pod(NS, "s1-mae", "new", "Running", index=0, log="a\nb\nc\n")
    cluster.add_pod(NS, "s1-mae", "rank1", "Running", index=1, log="rank one\n")
    assert k8s.logs(core, NS, "s1-mae") == "a\nb\nc\n"
    assert k8s.logs(core, NS, "s1-mae", tail_lines=1) == "c\n"
    assert k8s.logs(core, NS, "s1-mae", index=1) == "rank one\n"
    with pytest.raises(k8s.K8sError, match="no pod"):
        k8s.logs(core, NS, "s1-random")


def test_cancel_deletes_jobs_with_background_propagation_and_services(
    cluster: FakeCluster, apis: tuple[FakeBatchApi, FakeCoreApi]
) -> None:
    batch, core = apis
    k8s.submit(render_study(_study(nodes=2)), batch, core, NS)
    other = StudySpec(name="s2", recipe="bench-b", inits=("mae",), gpus=1)
    k8s.submit(render_study(other), batch, core, NS)
    cluster.add_pod(NS, "s1-mae", "p", "Running", index=0)
    assert k8s.studies(batch, NS) == ["s1", "s2"]

    assert k8s.cancel(batch, core, NS, "s1", inits=["mae"]) == ["s1-mae"]
    assert ("delete", "Job", "s1-mae:Background") in cluster.calls
    assert (NS, "s1-mae") not in cluster.services and (NS, "p") not in cluster.pods
    assert k8s.cancel(batch, core, NS, "s1") == ["s1-random"]
    assert k8s.cancel(batch, core, NS, "s1") == []  # idempotent
    assert [j.metadata.name for j in k8s.list_study_jobs(batch, NS)] == ["s2-mae"]
