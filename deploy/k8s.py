"""Submit, follow and cancel a study's Jobs through the ``kubernetes`` client.

Every function takes the API objects (``kubernetes.client.BatchV1Api`` / ``CoreV1Api`` or anything with the
same methods) as parameters; loading kubeconfig or in-cluster config is the CLI's job. The methods used are:
``create/read/list/delete_namespaced_job``, ``create/read/delete_namespaced_service``,
``list_namespaced_pod`` and ``read_namespaced_pod_log``.

Semantics users rely on:

* :func:`submit` is idempotent: an object that already exists with the same spec is reported "unchanged"
  and nothing new is created; one that exists with a different spec is reported "conflict" and left alone
  (Jobs are immutable: cancel first to change a run).
* :func:`study_status` counts a pod that failed with the ``DisruptionTarget`` condition (preemption,
  eviction, drain) as *retried*, not failed: the Job's podFailurePolicy ignores it and a new pod resumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from kubernetes.client.exceptions import ApiException

from vitbench.deploy.jobs import (
    ANNOTATION_SPEC_HASH,
    COMPLETION_INDEX_ANNOTATION,
    COMPONENT_PRETRAINING,
    JOB_NAME_LABEL,
    LABEL_COMPONENT,
    LABEL_INIT,
    LABEL_RECIPE,
    LABEL_STUDY,
    STUDY_SELECTOR,
    TRAINER_CONTAINER,
)
from vitbench.trainer import records

Action = Literal["created", "unchanged", "conflict"]
Phase = Literal["Queued", "Pending", "Running", "Succeeded", "Failed"]

#: Pod annotations a trainer (or a sidecar) may set; read before falling back to the logs.
ANNOTATION_ITERATION = "vitbench.io/iteration"
ANNOTATION_AP_BOX = "vitbench.io/ap-box"
ANNOTATION_AP_MASK = "vitbench.io/ap-mask"
_LOG_TAIL_LINES = 200


class K8sError(RuntimeError):
    """A Kubernetes call failed for a reason the user must act on (message says what and where)."""


class BatchApi(Protocol):
    """The ``BatchV1Api`` methods this module calls."""

    def create_namespaced_job(self, namespace: str, body: Any, **kwargs: Any) -> Any: ...
    def read_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> Any: ...
    def list_namespaced_job(self, namespace: str, **kwargs: Any) -> Any: ...
    def delete_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> Any: ...


class CoreApi(Protocol):
    """The ``CoreV1Api`` methods this module calls."""

    def create_namespaced_service(self, namespace: str, body: Any, **kwargs: Any) -> Any: ...
    def read_namespaced_service(self, name: str, namespace: str, **kwargs: Any) -> Any: ...
    def delete_namespaced_service(self, name: str, namespace: str, **kwargs: Any) -> Any: ...
    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any: ...
    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SubmitResult:
    """What :func:`submit` did with one manifest."""

    kind: str
    name: str
    namespace: str
    action: Action
    detail: str = ""


@dataclass(frozen=True)
class PodInfo:
    """One pod of a Job. ``disrupted``: it failed with condition DisruptionTarget (counted as a retry)."""

    name: str
    phase: str
    index: int | None
    disrupted: bool
    reason: str | None
    exit_code: int | None
    created: datetime | None


@dataclass(frozen=True)
class JobStatus:
    """One init's Job as ``bench status`` shows it.

    ``failed`` counts pods that failed for a reason that uses up ``backoffLimit``; ``retried`` counts pods
    replaced after a disruption. ``iteration``/``ap_box``/``ap_mask`` are the newest values reported by the
    rank-0 pod (annotations first, then the last JSON line of its log that carries them); AP is in percent
    points as the trainer reports it.
    """

    name: str
    study: str
    init: str
    recipe: str
    phase: Phase
    active: int
    succeeded: int
    failed: int
    retried: int
    pods: tuple[PodInfo, ...] = field(default_factory=tuple)
    iteration: int | None = None
    ap_box: float | None = None
    ap_mask: float | None = None
    message: str = ""
    pretraining: bool = False

    @property
    def run(self) -> str:
        """``<init>`` for a fine-tuning, ``pretrain <method>`` for a pre-training."""
        return f"pretrain {self.init}" if self.pretraining else self.init

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (pods summarised by name, phase and whether disrupted)."""
        return {
            "name": self.name,
            "study": self.study,
            "init": self.init,
            "kind": "pretraining" if self.pretraining else "fine-tuning",
            "recipe": self.recipe,
            "phase": self.phase,
            "active": self.active,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retried": self.retried,
            "iteration": self.iteration,
            "ap_box": self.ap_box,
            "ap_mask": self.ap_mask,
            "message": self.message,
            "pods": [
                {
                    "name": p.name,
                    "phase": p.phase,
                    "index": p.index,
                    "disrupted": p.disrupted,
                    "reason": p.reason,
                }
                for p in self.pods
            ],
        }


def _status_code(exc: ApiException) -> int | None:
    status = exc.status
    return status if isinstance(status, int) else None


def _api_error(exc: ApiException, what: str) -> K8sError:
    reason = exc.reason or str(exc)
    code = _status_code(exc)
    hint = ""
    if code in (401, 403):
        hint = " (check your kubeconfig credentials and that your ServiceAccount/Role allows it)"
    return K8sError(f"{what} failed: HTTP {code} {reason}{hint}")


def _get(obj: Any, *path: str) -> Any:
    """``obj.a.b`` of a ``kubernetes.client`` model, or ``obj['a']['b']`` of a dict; None if absent."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return obj


def submit(
    manifests: Sequence[Mapping[str, Any]], batch: BatchApi, core: CoreApi, namespace: str
) -> list[SubmitResult]:
    """Create the study's Jobs and Services in ``namespace``; existing objects are left untouched.

    A Job that exists is "unchanged" when its ``vitbench.io/spec-hash`` annotation matches the manifest's,
    otherwise "conflict". Jobs are created first so that each headless Service can name its Job as owner:
    the Service then goes away with the Job (TTL, cancel, kubectl delete). Results keep the manifests'
    order. Raises :class:`K8sError` for any other API failure (nothing is retried blindly).
    """
    by_index: dict[int, SubmitResult] = {}
    job_uids: dict[str, str] = {}
    order = sorted(range(len(manifests)), key=lambda i: manifests[i]["kind"] != "Job")
    for i in order:
        doc = manifests[i]
        kind = doc["kind"]
        name = doc["metadata"]["name"]
        metadata = {**doc["metadata"], "namespace": namespace}
        if kind == "Job":
            read, create = batch.read_namespaced_job, batch.create_namespaced_job
        elif kind == "Service":
            read, create = core.read_namespaced_service, core.create_namespaced_service
            if name in job_uids:
                metadata["ownerReferences"] = [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uids[name]}
                ]
        else:
            raise K8sError(f"submit handles Jobs and Services, not {kind} ({name})")
        body = {**doc, "metadata": metadata}
        existing = _read_or_none(read, name, namespace, f"reading {kind} {namespace}/{name}")
        if existing is None:
            try:
                existing = create(namespace, body)
            except ApiException as exc:
                if _status_code(exc) != 409:
                    raise _api_error(exc, f"creating {kind} {namespace}/{name}") from exc
                # Created by someone else between our read and create: report what is there now.
                existing = _read_or_none(read, name, namespace, f"reading {kind} {namespace}/{name}")
                by_index[i] = _compare(kind, name, namespace, doc, existing)
            else:
                by_index[i] = SubmitResult(kind, name, namespace, "created")
        else:
            by_index[i] = _compare(kind, name, namespace, doc, existing)
        uid = _get(existing, "metadata", "uid")
        if kind == "Job" and uid:
            job_uids[name] = str(uid)
    return [by_index[i] for i in range(len(manifests))]


def _read_or_none(read: Any, name: str, namespace: str, what: str) -> Any:
    try:
        return read(name, namespace)
    except ApiException as exc:
        if _status_code(exc) == 404:
            return None
        raise _api_error(exc, what) from exc


def _compare(kind: str, name: str, namespace: str, doc: Mapping[str, Any], existing: Any) -> SubmitResult:
    if kind != "Job":
        return SubmitResult(kind, name, namespace, "unchanged", "already exists")
    wanted = doc["metadata"].get("annotations", {}).get(ANNOTATION_SPEC_HASH)
    annotations = _get(existing, "metadata", "annotations") or {}
    have = annotations.get(ANNOTATION_SPEC_HASH)
    if wanted is not None and have == wanted:
        return SubmitResult(kind, name, namespace, "unchanged", "already exists with the same spec")
    return SubmitResult(
        kind,
        name,
        namespace,
        "conflict",
        "already exists with a different spec; `vitbench bench cancel` it first to change the run",
    )


def list_study_jobs(batch: BatchApi, namespace: str, study: str | None = None) -> list[Any]:
    """The studies' Jobs in ``namespace`` (of one study when given) — pre-trainings and fine-tunings —
    sorted by study, then pre-trainings first, then init."""
    selector = STUDY_SELECTOR + (f",{LABEL_STUDY}={study}" if study is not None else "")
    try:
        jobs = list(batch.list_namespaced_job(namespace, label_selector=selector).items or [])
    except ApiException as exc:
        raise _api_error(exc, f"listing Jobs in namespace {namespace}") from exc
    return sorted(jobs, key=lambda j: (_label(j, LABEL_STUDY), not is_pretraining(j), _label(j, LABEL_INIT)))


def is_pretraining(job: Any) -> bool:
    """True for a pre-training Job (component label ``pretraining``)."""
    return _label(job, LABEL_COMPONENT) == COMPONENT_PRETRAINING


def _label(obj: Any, key: str) -> str:
    return str((_get(obj, "metadata", "labels") or {}).get(key, ""))


def _pod_info(pod: Any) -> PodInfo:
    conditions = _get(pod, "status", "conditions") or []
    disrupted = any(_get(c, "type") == "DisruptionTarget" and _get(c, "status") == "True" for c in conditions)
    phase = str(_get(pod, "status", "phase") or "Unknown")
    reason = _get(pod, "status", "reason")
    exit_code: int | None = None
    for cs in _get(pod, "status", "container_statuses") or []:
        if _get(cs, "name") == TRAINER_CONTAINER:
            term = _get(cs, "state", "terminated") or _get(cs, "last_state", "terminated")
            if term is not None:
                exit_code = _get(term, "exit_code")
                reason = reason or _get(term, "reason")
    if disrupted:  # why it was disrupted (PreemptionByScheduler, EvictionByEvictionAPI...) says more
        reason = next(
            (_get(c, "reason") for c in conditions if _get(c, "type") == "DisruptionTarget"), reason
        )
    index_raw = (_get(pod, "metadata", "annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    index = int(index_raw) if index_raw is not None and str(index_raw).isdigit() else None
    return PodInfo(
        name=str(_get(pod, "metadata", "name")),
        phase=phase,
        index=index,
        disrupted=disrupted and phase == "Failed",
        reason=reason,
        exit_code=exit_code,
        created=_get(pod, "metadata", "creation_timestamp"),
    )


def _job_phase(job: Any) -> tuple[Phase, str]:
    for cond in _get(job, "status", "conditions") or []:
        if _get(cond, "status") != "True":
            continue
        ctype = _get(cond, "type")
        message = str(_get(cond, "message") or _get(cond, "reason") or "")
        if ctype == "Complete":
            return "Succeeded", message
        if ctype == "Failed":
            return "Failed", message
        if ctype == "Suspended":
            return "Queued", message or "suspended (waiting for admission)"
    if _get(job, "spec", "suspend"):
        return "Queued", "suspended (waiting for admission)"
    if (_get(job, "status", "active") or 0) > 0:
        return "Running", ""
    return "Pending", ""


def parse_progress(log_text: str) -> tuple[int | None, float | None, float | None]:
    """(iteration, box AP, mask AP) from a trainer log: the train record stream of
    :mod:`vitbench.trainer.records` (``vitbench train --json``), newest records first."""
    p = records.progress(records.parse_records(log_text))
    return p.iteration, p.ap_box, p.ap_mask


def _progress(core: CoreApi, namespace: str, pod: Any) -> tuple[int | None, float | None, float | None]:
    annotations = _get(pod, "metadata", "annotations") or {}
    it_ann, box_ann, mask_ann = (
        annotations.get(k) for k in (ANNOTATION_ITERATION, ANNOTATION_AP_BOX, ANNOTATION_AP_MASK)
    )
    if it_ann is not None:
        try:
            return (
                int(it_ann),
                float(box_ann) if box_ann is not None else None,
                float(mask_ann) if mask_ann is not None else None,
            )
        except ValueError:
            pass
    if _get(pod, "status", "phase") not in ("Running", "Succeeded", "Failed"):
        return None, None, None
    try:
        text = core.read_namespaced_pod_log(
            str(_get(pod, "metadata", "name")),
            namespace,
            container=TRAINER_CONTAINER,
            tail_lines=_LOG_TAIL_LINES,
        )
    except ApiException:
        return None, None, None  # logs are best effort: a pod that vanished leaves no progress
    return parse_progress(str(text or ""))


def _pods_of(core: CoreApi, namespace: str, job_name: str) -> list[Any]:
    try:
        pods = list(
            core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={job_name}").items or []
        )
    except ApiException as exc:
        raise _api_error(exc, f"listing pods of Job {namespace}/{job_name}") from exc
    return sorted(
        pods,
        key=lambda p: (
            _get(p, "metadata", "creation_timestamp") or datetime.min,
            _get(p, "metadata", "name"),
        ),
    )


def job_status(batch: BatchApi, core: CoreApi, namespace: str, job: Any) -> JobStatus:
    """The :class:`JobStatus` of one Job object (as returned by ``list/read_namespaced_job``)."""
    name = str(_get(job, "metadata", "name"))
    pods = _pods_of(core, namespace, name)
    infos = tuple(_pod_info(p) for p in pods)
    phase, message = _job_phase(job)
    retried = sum(1 for p in infos if p.disrupted)
    failed = sum(1 for p in infos if p.phase == "Failed" and not p.disrupted)
    # Rank 0's newest pod reports progress (earlier pods of a resumed run hold older numbers).
    rank0 = [p for p, i in zip(pods, infos, strict=True) if i.index in (None, 0)]
    iteration = ap_box = ap_mask = None
    for pod in reversed(rank0):
        iteration, ap_box, ap_mask = _progress(core, namespace, pod)
        if iteration is not None:
            break
    return JobStatus(
        name=name,
        study=_label(job, LABEL_STUDY),
        init=_label(job, LABEL_INIT),
        recipe=_label(job, LABEL_RECIPE),
        phase=phase,
        active=int(_get(job, "status", "active") or 0),
        succeeded=int(_get(job, "status", "succeeded") or 0),
        failed=failed,
        retried=retried,
        pods=infos,
        iteration=iteration,
        ap_box=ap_box,
        ap_mask=ap_mask,
        message=message,
        pretraining=is_pretraining(job),
    )


def study_status(batch: BatchApi, core: CoreApi, namespace: str, study: str | None = None) -> list[JobStatus]:
    """Status of every benchmark Job in ``namespace`` (one study when given)."""
    return [job_status(batch, core, namespace, j) for j in list_study_jobs(batch, namespace, study)]


def studies(batch: BatchApi, namespace: str) -> list[str]:
    """Names of the studies with Jobs in ``namespace``, sorted."""
    return sorted({_label(j, LABEL_STUDY) for j in list_study_jobs(batch, namespace)})


def pod_for_logs(core: CoreApi, namespace: str, job_name: str, index: int = 0) -> str:
    """Name of the newest pod of ``job_name`` with completion index ``index`` (single-node: newest pod)."""
    candidates = [p for p in _pods_of(core, namespace, job_name) if _pod_info(p).index in (None, index)]
    if not candidates:
        raise K8sError(f"Job {namespace}/{job_name} has no pod (index {index}) yet; is it still queued?")
    return str(_get(candidates[-1], "metadata", "name"))


def logs(core: CoreApi, namespace: str, job_name: str, index: int = 0, tail_lines: int | None = None) -> str:
    """The trainer container's log of the newest pod for ``index`` of ``job_name``."""
    pod = pod_for_logs(core, namespace, job_name, index)
    kwargs: dict[str, Any] = {"container": TRAINER_CONTAINER}
    if tail_lines is not None:
        kwargs["tail_lines"] = tail_lines
    try:
        return str(core.read_namespaced_pod_log(pod, namespace, **kwargs) or "")
    except ApiException as exc:
        raise _api_error(exc, f"reading the log of pod {namespace}/{pod}") from exc


def follow_logs(
    core: CoreApi, namespace: str, job_name: str, index: int = 0, tail_lines: int | None = None
) -> Iterator[str]:
    """Stream the trainer log of the newest pod for ``index`` as it is written (text chunks).

    Ends when the container stops; the HTTP connection is released when the caller stops iterating.
    """
    pod = pod_for_logs(core, namespace, job_name, index)
    kwargs: dict[str, Any] = {"container": TRAINER_CONTAINER, "follow": True, "_preload_content": False}
    if tail_lines is not None:
        kwargs["tail_lines"] = tail_lines
    try:
        response = core.read_namespaced_pod_log(pod, namespace, **kwargs)
    except ApiException as exc:
        raise _api_error(exc, f"following the log of pod {namespace}/{pod}") from exc
    try:
        for chunk in response.stream(4096):
            yield chunk.decode("utf-8", errors="replace")
    finally:
        response.release_conn()


def cancel(
    batch: BatchApi, core: CoreApi, namespace: str, study: str, inits: Iterable[str] | None = None
) -> list[str]:
    """Delete the study's Jobs (propagation Background: their pods go too) and headless Services.

    Returns the deleted Job names; Jobs already gone are skipped silently (cancel is idempotent).
    """
    wanted = set(inits) if inits is not None else None
    deleted: list[str] = []
    for job in list_study_jobs(batch, namespace, study):
        if wanted is not None and _label(job, LABEL_INIT) not in wanted:
            continue
        name = str(_get(job, "metadata", "name"))
        try:
            batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if _status_code(exc) != 404:
                raise _api_error(exc, f"deleting Job {namespace}/{name}") from exc
            continue
        deleted.append(name)
        try:
            core.delete_namespaced_service(name, namespace)
        except ApiException as exc:
            if _status_code(exc) != 404:
                raise _api_error(exc, f"deleting Service {namespace}/{name}") from exc
    return deleted
